//! The VFIO and iommufd ioctls the `vfio-mig:` and `vfio-pf:` backends
//! issue, as safe functions: the only `unsafe` code of this crate.
//!
//! Every call passes the kernel a pointer to a live, exclusively borrowed
//! value whose size covers the `argsz` it declares (or an integer, or a
//! NUL-terminated name), and every struct is `FromBytes`, so nothing the
//! kernel writes back can make an invalid value. Numbers and layouts are
//! those of `include/uapi/linux/vfio.h` and `iommufd.h` (Linux 6.12); the
//! `static_assertions` pin the sizes the uAPI documents.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_void};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use rustix::io::{Errno, Result};
use rustix::ioctl::{Ioctl, IoctlOutput, Opcode, opcode};
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// `VFIO_TYPE`: the ioctl group of VFIO (`';'`).
const VFIO_TYPE: u8 = b';';
/// `VFIO_BASE`: the first VFIO ioctl number.
const VFIO_BASE: u8 = 100;
pub(super) mod dma_logging;

/// `IOMMUFD_TYPE`: the ioctl group of iommufd (also `';'`, numbers from 0x80).
const IOMMUFD_TYPE: u8 = b';';

const fn vfio_io(n: u8) -> Opcode {
    opcode::none(VFIO_TYPE, VFIO_BASE + n)
}

const VFIO_GET_API_VERSION: Opcode = vfio_io(0);
const VFIO_CHECK_EXTENSION: Opcode = vfio_io(1);
const VFIO_SET_IOMMU: Opcode = vfio_io(2);
const VFIO_GROUP_GET_STATUS: Opcode = vfio_io(3);
const VFIO_GROUP_SET_CONTAINER: Opcode = vfio_io(4);
const VFIO_GROUP_GET_DEVICE_FD: Opcode = vfio_io(6);
const VFIO_DEVICE_GET_INFO: Opcode = vfio_io(7);
const VFIO_DEVICE_RESET: Opcode = vfio_io(11);
const VFIO_DEVICE_FEATURE: Opcode = vfio_io(17);
const VFIO_DEVICE_BIND_IOMMUFD: Opcode = vfio_io(18);
const VFIO_DEVICE_ATTACH_IOMMUFD_PT: Opcode = vfio_io(19);
const VFIO_MIG_GET_PRECOPY_INFO: Opcode = vfio_io(21);
/// `IOMMU_IOAS_ALLOC`: `_IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOC = 0x81)`.
const IOMMU_IOAS_ALLOC: Opcode = opcode::none(IOMMUFD_TYPE, 0x81);
/// `IOMMU_OPTION`: `_IO(IOMMUFD_TYPE, IOMMUFD_CMD_OPTION = 0x87)`.
const IOMMU_OPTION: Opcode = opcode::none(IOMMUFD_TYPE, 0x87);
/// `IOMMU_OPTION_RLIMIT_MODE`: a global option, readable by anyone.
const IOMMU_OPTION_RLIMIT_MODE: u32 = 0;
/// `IOMMU_OPTION_OP_GET`.
const IOMMU_OPTION_OP_GET: u16 = 1;

/// `VFIO_API_VERSION`: the only container API version there is.
pub(super) const VFIO_API_VERSION: i32 = 0;
/// `VFIO_TYPE1v2_IOMMU`.
pub(super) const VFIO_TYPE1V2_IOMMU: u32 = 3;
/// `VFIO_NOIOMMU_IOMMU`: the only IOMMU a noiommu group's container takes.
pub(super) const VFIO_NOIOMMU_IOMMU: u32 = 8;
/// `VFIO_GROUP_FLAGS_VIABLE`: every device of the group is bound to a VFIO
/// driver (or to none).
pub(super) const VFIO_GROUP_FLAGS_VIABLE: u32 = 1 << 0;

/// `VFIO_DEVICE_FEATURE_GET`.
const FEATURE_GET: u32 = 1 << 16;
/// `VFIO_DEVICE_FEATURE_SET`.
const FEATURE_SET: u32 = 1 << 17;
/// `VFIO_DEVICE_FEATURE_PROBE`.
const FEATURE_PROBE: u32 = 1 << 18;
/// `VFIO_DEVICE_FEATURE_MIGRATION`.
const FEATURE_MIGRATION: u32 = 1;
/// `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE`.
const FEATURE_MIG_DEVICE_STATE: u32 = 2;
/// `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE`.
const FEATURE_MIG_DATA_SIZE: u32 = 9;
/// `VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2` (posted 2026, not in 6.12).
const FEATURE_MIG_PRECOPY_INFO_V2: u32 = 12;
/// `VFIO_PRECOPY_INFO_REINIT` (PRECOPY_INFOv2 only).
pub(super) const PRECOPY_INFO_REINIT: u32 = 1 << 0;

/// `struct vfio_group_status`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable)]
struct GroupStatus {
    argsz: u32,
    flags: u32,
}
const_assert_eq!(size_of::<GroupStatus>(), 8);

/// `struct vfio_device_feature` with room for the 8-byte payloads of
/// MIGRATION, MIG_DEVICE_STATE and MIG_DATA_SIZE (16 bytes, as QEMU sizes
/// it). The payload is 8-aligned like the kernel's `__aligned_u64`s.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable)]
struct Feature {
    argsz: u32,
    flags: u32,
    data: [u8; 8],
}
const_assert_eq!(size_of::<Feature>(), 16);

/// `struct vfio_precopy_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable)]
pub(super) struct PrecopyInfo {
    argsz: u32,
    /// Output flags (PRECOPY_INFOv2 only; echoes the input otherwise).
    pub(super) flags: u32,
    /// Initial bytes still to read.
    pub(super) initial_bytes: u64,
    /// Dirty bytes still to read.
    pub(super) dirty_bytes: u64,
}
const_assert_eq!(size_of::<PrecopyInfo>(), 24);

/// `struct vfio_device_bind_iommufd` (without the 6.17 token pointer; the
/// kernel takes argsz as the version).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable)]
struct BindIommufd {
    argsz: u32,
    flags: u32,
    iommufd: i32,
    out_devid: u32,
}
const_assert_eq!(size_of::<BindIommufd>(), 16);

/// `struct vfio_device_attach_iommufd_pt` (without the 6.11 pasid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable)]
struct AttachIommufdPt {
    argsz: u32,
    flags: u32,
    pt_id: u32,
}
const_assert_eq!(size_of::<AttachIommufdPt>(), 12);

/// `struct vfio_device_info` up to `num_irqs` (the kernel's `minsz`; the
/// capability chain after it is not asked for).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable)]
pub(super) struct DeviceInfo {
    argsz: u32,
    /// `VFIO_DEVICE_FLAGS_*`.
    pub(super) flags: u32,
    /// Regions (BARs, config space, migration region of v1, ...).
    pub(super) num_regions: u32,
    /// Interrupt types.
    pub(super) num_irqs: u32,
}
const_assert_eq!(size_of::<DeviceInfo>(), 16);

/// `VFIO_DEVICE_FLAGS_PCI`.
pub(super) const DEVICE_FLAGS_PCI: u32 = 1 << 1;
/// `VFIO_DEVICE_FLAGS_PLATFORM`.
pub(super) const DEVICE_FLAGS_PLATFORM: u32 = 1 << 2;

/// `struct vfio_device_feature_mig_state`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable)]
struct MigDeviceState {
    device_state: u32,
    data_fd: i32,
}
const_assert_eq!(size_of::<MigDeviceState>(), 8);

/// `struct iommu_option`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable)]
struct IommuOption {
    size: u32,
    option_id: u32,
    op: u16,
    reserved: u16,
    object_id: u32,
    val64: u64,
}
const_assert_eq!(size_of::<IommuOption>(), 24);

/// `struct iommu_ioas_alloc`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable)]
struct IoasAlloc {
    size: u32,
    flags: u32,
    out_ioas_id: u32,
}
const_assert_eq!(size_of::<IoasAlloc>(), 12);

/// One ioctl call: an opcode and its argument (a pointer or an integer).
struct Call {
    opcode: Opcode,
    arg: *mut c_void,
}

// SAFETY: `Call` is only built by the functions below, each of which pairs
// an opcode with the argument its uAPI defines: a pointer to a live,
// exclusively borrowed value at least as large as the `argsz` it declares,
// a NUL-terminated string the kernel only reads, or an integer passed by
// value. The kernel's return value is the output; nothing is read back
// through the pointer here (callers read their own borrowed value).
unsafe impl Ioctl for Call {
    type Output = IoctlOutput;
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        self.opcode
    }

    fn as_ptr(&mut self) -> *mut c_void {
        self.arg
    }

    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut c_void) -> Result<IoctlOutput> {
        Ok(out)
    }
}

/// An ioctl whose argument is `value`, read and written by the kernel.
fn call_with<T: FromBytes + IntoBytes>(fd: impl AsFd, op: Opcode, value: &mut T) -> Result<i32> {
    let call = Call {
        opcode: op,
        arg: std::ptr::from_mut(value).cast(),
    };
    // SAFETY: see `Call`: `value` is live and exclusively borrowed for the
    // call, its size covers the argsz every caller sets, and any bytes the
    // kernel writes form a valid `T` (`FromBytes`).
    unsafe { rustix::ioctl::ioctl(fd, call) }
}

/// An ioctl whose argument is an integer passed by value (or none).
fn call_int(fd: impl AsFd, op: Opcode, value: usize) -> Result<i32> {
    let call = Call {
        opcode: op,
        arg: std::ptr::without_provenance_mut(value),
    };
    // SAFETY: see `Call`: the opcodes passed here take an integer argument
    // (or ignore it) and never dereference it.
    unsafe { rustix::ioctl::ioctl(fd, call) }
}

/// Takes ownership of a file descriptor an ioctl just returned.
fn owned_fd(raw: i32) -> Result<OwnedFd> {
    // A successful ioctl that returns an fd returns a valid one; a negative
    // number would be a kernel bug, reported as the bad fd it is.
    if raw < 0 {
        return Err(Errno::BADF);
    }
    // SAFETY: the kernel installed `raw` in our table for this call and
    // returned it to us alone; nothing else in the process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A duplicate (close-on-exec, numbered 3 or above) of fd number `raw`,
/// which the caller says this process inherited from its parent, as
/// QEMU's `fd=` options take a VMM's descriptors. Fd `raw` itself is left
/// as it is: whoever owns it keeps it.
pub(super) fn dup_inherited(raw: RawFd) -> Result<OwnedFd> {
    if raw < 0 {
        return Err(Errno::BADF);
    }
    // SAFETY: the borrow lives for this one F_DUPFD_CLOEXEC only, which
    // neither closes nor changes fd `raw`, whoever owns it; a number that
    // is not open is refused by the kernel with EBADF.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    rustix::io::fcntl_dupfd_cloexec(fd, 3)
}

/// `VFIO_GET_API_VERSION` on the container.
pub(super) fn api_version(container: impl AsFd) -> Result<i32> {
    call_int(container, VFIO_GET_API_VERSION, 0)
}

/// `VFIO_CHECK_EXTENSION`: whether the container supports IOMMU `kind`.
pub(super) fn check_extension(container: impl AsFd, kind: u32) -> Result<bool> {
    Ok(call_int(container, VFIO_CHECK_EXTENSION, kind as usize)? > 0)
}

/// `VFIO_SET_IOMMU`.
pub(super) fn set_iommu(container: impl AsFd, kind: u32) -> Result<()> {
    call_int(container, VFIO_SET_IOMMU, kind as usize).map(drop)
}

/// `VFIO_GROUP_GET_STATUS`: the group's flags.
pub(super) fn group_flags(group: impl AsFd) -> Result<u32> {
    let mut status = GroupStatus {
        argsz: size_of::<GroupStatus>() as u32,
        flags: 0,
    };
    call_with(group, VFIO_GROUP_GET_STATUS, &mut status)?;
    Ok(status.flags)
}

/// `VFIO_GROUP_SET_CONTAINER`.
pub(super) fn group_set_container(group: impl AsFd, container: impl AsFd) -> Result<()> {
    let mut fd: i32 = container.as_fd().as_raw_fd();
    call_with(group, VFIO_GROUP_SET_CONTAINER, &mut fd).map(drop)
}

/// `VFIO_GROUP_GET_DEVICE_FD`: opens the device `name` of the group.
pub(super) fn group_device_fd(group: impl AsFd, name: &CStr) -> Result<OwnedFd> {
    let call = Call {
        opcode: VFIO_GROUP_GET_DEVICE_FD,
        arg: name.as_ptr().cast_mut().cast(),
    };
    // SAFETY: see `Call`: the kernel reads the NUL-terminated `name` only.
    let raw = unsafe { rustix::ioctl::ioctl(group, call) }?;
    owned_fd(raw)
}

/// `VFIO_DEVICE_GET_INFO`: what kind of device, its regions and
/// interrupts. Answers on any VFIO device fd the user may use; an
/// unbound cdev fails `EINVAL`, any other file `ENOTTY`.
pub(super) fn device_info(device: impl AsFd) -> Result<DeviceInfo> {
    let mut info = DeviceInfo {
        argsz: size_of::<DeviceInfo>() as u32,
        ..DeviceInfo::default()
    };
    call_with(device, VFIO_DEVICE_GET_INFO, &mut info)?;
    Ok(info)
}

/// `VFIO_DEVICE_BIND_IOMMUFD`: returns the device id.
pub(super) fn bind_iommufd(device: impl AsFd, iommufd: impl AsFd) -> Result<u32> {
    let mut bind = BindIommufd {
        argsz: size_of::<BindIommufd>() as u32,
        flags: 0,
        iommufd: iommufd.as_fd().as_raw_fd(),
        out_devid: 0,
    };
    call_with(device, VFIO_DEVICE_BIND_IOMMUFD, &mut bind)?;
    Ok(bind.out_devid)
}

/// `IOMMU_IOAS_ALLOC`: a new I/O address space.
pub(super) fn ioas_alloc(iommufd: impl AsFd) -> Result<u32> {
    let mut alloc = IoasAlloc {
        size: size_of::<IoasAlloc>() as u32,
        flags: 0,
        out_ioas_id: 0,
    };
    call_with(iommufd, IOMMU_IOAS_ALLOC, &mut alloc)?;
    Ok(alloc.out_ioas_id)
}

/// `IOMMU_OPTION` GET of `RLIMIT_MODE`: a read with no side effect that
/// only an iommufd answers (Linux 6.2 and later), so it tells an iommufd
/// from any other file.
pub(super) fn iommufd_rlimit_mode(iommufd: impl AsFd) -> Result<u64> {
    let mut option = IommuOption {
        size: size_of::<IommuOption>() as u32,
        option_id: IOMMU_OPTION_RLIMIT_MODE,
        op: IOMMU_OPTION_OP_GET,
        ..IommuOption::default()
    };
    call_with(iommufd, IOMMU_OPTION, &mut option)?;
    Ok(option.val64)
}

/// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
pub(super) fn attach_pt(device: impl AsFd, pt_id: u32) -> Result<()> {
    let mut attach = AttachIommufdPt {
        argsz: size_of::<AttachIommufdPt>() as u32,
        flags: 0,
        pt_id,
    };
    call_with(device, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &mut attach).map(drop)
}

/// `VFIO_DEVICE_RESET`.
pub(super) fn device_reset(device: impl AsFd) -> Result<()> {
    call_int(device, VFIO_DEVICE_RESET, 0).map(drop)
}

/// `VFIO_DEVICE_FEATURE` with an 8-byte payload; returns the payload.
fn feature(device: impl AsFd, flags: u32, payload: [u8; 8]) -> Result<[u8; 8]> {
    let mut f = Feature {
        argsz: size_of::<Feature>() as u32,
        flags,
        data: payload,
    };
    call_with(device, VFIO_DEVICE_FEATURE, &mut f)?;
    Ok(f.data)
}

/// PROBE of GET `VFIO_DEVICE_FEATURE_MIGRATION`: `Ok` when the driver
/// offers migration, `ENOTTY` when it does not.
pub(super) fn probe_migration(device: impl AsFd) -> Result<()> {
    let mut f = Feature {
        argsz: 8,
        flags: FEATURE_PROBE | FEATURE_GET | FEATURE_MIGRATION,
        data: [0; 8],
    };
    call_with(device, VFIO_DEVICE_FEATURE, &mut f).map(drop)
}

/// GET `VFIO_DEVICE_FEATURE_MIGRATION`: the migration flags.
pub(super) fn migration_flags(device: impl AsFd) -> Result<u64> {
    feature(device, FEATURE_GET | FEATURE_MIGRATION, [0; 8]).map(u64::from_ne_bytes)
}

/// GET `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE`.
pub(super) fn get_state(device: impl AsFd) -> Result<u32> {
    let data = feature(device, FEATURE_GET | FEATURE_MIG_DEVICE_STATE, [0; 8])?;
    let state: MigDeviceState = zerocopy::transmute!(data);
    Ok(state.device_state)
}

/// SET `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE`: the data fd the transition
/// opened, if any.
pub(super) fn set_state(device: impl AsFd, state: u32) -> Result<Option<OwnedFd>> {
    let request = MigDeviceState {
        device_state: state,
        data_fd: -1,
    };
    let data = feature(
        device,
        FEATURE_SET | FEATURE_MIG_DEVICE_STATE,
        zerocopy::transmute!(request),
    )?;
    let reply: MigDeviceState = zerocopy::transmute!(data);
    if reply.data_fd < 0 {
        return Ok(None);
    }
    owned_fd(reply.data_fd).map(Some)
}

/// GET `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE`: `stop_copy_length`.
pub(super) fn data_size(device: impl AsFd) -> Result<u64> {
    feature(device, FEATURE_GET | FEATURE_MIG_DATA_SIZE, [0; 8]).map(u64::from_ne_bytes)
}

/// PROBE|SET `VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2`: whether the kernel
/// knows the v2 opt-in.
pub(super) fn probe_precopy_info_v2(device: impl AsFd) -> bool {
    let mut f = Feature {
        argsz: 8,
        flags: FEATURE_PROBE | FEATURE_SET | FEATURE_MIG_PRECOPY_INFO_V2,
        data: [0; 8],
    };
    call_with(device, VFIO_DEVICE_FEATURE, &mut f).is_ok()
}

/// SET `VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2` (no payload).
pub(super) fn enable_precopy_info_v2(device: impl AsFd) -> Result<()> {
    let mut f = Feature {
        argsz: 8,
        flags: FEATURE_SET | FEATURE_MIG_PRECOPY_INFO_V2,
        data: [0; 8],
    };
    call_with(device, VFIO_DEVICE_FEATURE, &mut f).map(drop)
}

/// `VFIO_MIG_GET_PRECOPY_INFO` on a data fd.
pub(super) fn precopy_info(data: impl AsFd) -> Result<PrecopyInfo> {
    let mut info = PrecopyInfo {
        argsz: size_of::<PrecopyInfo>() as u32,
        ..PrecopyInfo::default()
    };
    call_with(data, VFIO_MIG_GET_PRECOPY_INFO, &mut info)?;
    Ok(info)
}

// ---------------------------------------------------------------------------
// For `vfio-pf:` (crate::vfio_pf): a PF driven from userspace needs its BAR0
// region, its config space and DMA mappings in its container or IOAS.

const VFIO_DEVICE_GET_REGION_INFO: Opcode = vfio_io(8);
const VFIO_IOMMU_GET_INFO: Opcode = vfio_io(12);
const VFIO_IOMMU_MAP_DMA: Opcode = vfio_io(13);
const VFIO_IOMMU_UNMAP_DMA: Opcode = vfio_io(14);
/// `IOMMU_IOAS_IOVA_RANGES`: `_IO(IOMMUFD_TYPE, 0x84)`.
const IOMMU_IOAS_IOVA_RANGES: Opcode = opcode::none(IOMMUFD_TYPE, 0x84);
/// `IOMMU_IOAS_MAP`: `_IO(IOMMUFD_TYPE, 0x85)`.
const IOMMU_IOAS_MAP: Opcode = opcode::none(IOMMUFD_TYPE, 0x85);
/// `IOMMU_IOAS_UNMAP`: `_IO(IOMMUFD_TYPE, 0x86)`.
const IOMMU_IOAS_UNMAP: Opcode = opcode::none(IOMMUFD_TYPE, 0x86);

/// `VFIO_PCI_BAR0_REGION_INDEX`.
pub(crate) const BAR0_REGION: u32 = 0;
/// `VFIO_PCI_CONFIG_REGION_INDEX`.
pub(crate) const CONFIG_REGION: u32 = 7;
/// `VFIO_REGION_INFO_FLAG_READ` | `_WRITE`.
pub(crate) const REGION_READ_WRITE: u32 = 0b11;
/// `VFIO_IOMMU_INFO_CAPS`.
const IOMMU_INFO_CAPS: u32 = 1 << 1;
/// `VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`.
const CAP_IOVA_RANGE: u16 = 1;
/// `VFIO_DMA_MAP_FLAG_READ` | `_WRITE`.
const DMA_MAP_READ_WRITE: u32 = 0b11;
/// `IOMMU_IOAS_MAP_FIXED_IOVA` | `_WRITEABLE` | `_READABLE`.
const IOAS_MAP_FIXED_RW: u32 = 0b111;
/// Most IOVA ranges read (x86 reports 2 or 3).
const MAX_IOVA_RANGES: usize = 64;

/// `struct vfio_region_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable)]
pub(crate) struct RegionInfo {
    argsz: u32,
    /// `VFIO_REGION_INFO_FLAG_*`.
    pub(crate) flags: u32,
    index: u32,
    cap_offset: u32,
    /// Bytes.
    pub(crate) size: u64,
    /// Where the region starts in the device fd (for pread/pwrite).
    pub(crate) offset: u64,
}
const_assert_eq!(size_of::<RegionInfo>(), 32);

/// `struct vfio_iommu_type1_info` followed by room for its capability chain.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable)]
struct Type1Info {
    argsz: u32,
    flags: u32,
    iova_pgsizes: u64,
    cap_offset: u32,
    pad: u32,
    caps: [u8; 1024],
}
const_assert_eq!(size_of::<Type1Info>(), 24 + 1024);

/// `struct vfio_iommu_type1_dma_map`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable)]
struct DmaMap {
    argsz: u32,
    flags: u32,
    vaddr: u64,
    iova: u64,
    size: u64,
}
const_assert_eq!(size_of::<DmaMap>(), 32);

/// `struct vfio_iommu_type1_dma_unmap` (no dirty bitmap).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable)]
struct DmaUnmap {
    argsz: u32,
    flags: u32,
    iova: u64,
    size: u64,
}
const_assert_eq!(size_of::<DmaUnmap>(), 24);

/// `struct iommu_iova_range`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable)]
struct IovaRange {
    start: u64,
    last: u64,
}

/// `struct iommu_ioas_iova_ranges`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable)]
struct IoasIovaRanges {
    size: u32,
    ioas_id: u32,
    num_iovas: u32,
    reserved: u32,
    allowed_iovas: u64,
    out_iova_alignment: u64,
}
const_assert_eq!(size_of::<IoasIovaRanges>(), 32);

/// `struct iommu_ioas_map`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable)]
struct IoasMap {
    size: u32,
    flags: u32,
    ioas_id: u32,
    reserved: u32,
    user_va: u64,
    length: u64,
    iova: u64,
}
const_assert_eq!(size_of::<IoasMap>(), 40);

/// `struct iommu_ioas_unmap`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable)]
struct IoasUnmap {
    size: u32,
    ioas_id: u32,
    iova: u64,
    length: u64,
}
const_assert_eq!(size_of::<IoasUnmap>(), 24);

/// `VFIO_DEVICE_GET_REGION_INFO` of region `index`.
pub(crate) fn region_info(device: impl AsFd, index: u32) -> Result<RegionInfo> {
    let mut info = RegionInfo {
        argsz: size_of::<RegionInfo>() as u32,
        index,
        ..RegionInfo::default()
    };
    call_with(device, VFIO_DEVICE_GET_REGION_INFO, &mut info)?;
    Ok(info)
}

/// The IOVA ranges a type1 container accepts (`VFIO_IOMMU_GET_INFO`'s
/// IOVA_RANGE capability), `[start, end]` inclusive; empty when the kernel
/// reports none.
pub(crate) fn type1_iova_ranges(container: impl AsFd) -> Result<Vec<(u64, u64)>> {
    let mut info = Type1Info {
        argsz: size_of::<Type1Info>() as u32,
        flags: 0,
        iova_pgsizes: 0,
        cap_offset: 0,
        pad: 0,
        caps: [0; 1024],
    };
    call_with(container, VFIO_IOMMU_GET_INFO, &mut info)?;
    let mut ranges = Vec::new();
    if info.flags & IOMMU_INFO_CAPS == 0 {
        return Ok(ranges);
    }
    // The chain's offsets count from the start of the structure; the
    // capability area starts 24 bytes in. Everything is read through
    // checked slices: the kernel wrote these bytes, but a wrong offset must
    // not become a panic.
    let bytes = info.as_bytes();
    let at_bytes = |at: usize, n: usize| bytes.get(at..at.checked_add(n)?);
    let u16_at = |at| {
        at_bytes(at, 2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_ne_bytes)
    };
    let u32_at = |at| {
        at_bytes(at, 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
    };
    let u64_at = |at| {
        at_bytes(at, 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_ne_bytes)
    };
    let mut at = info.cap_offset as usize;
    // A chain longer than 16 capabilities (or a loop) ends the walk.
    for _ in 0..16 {
        let (Some(id), Some(next)) = (u16_at(at), u32_at(at + 4)) else {
            break;
        };
        if id == CAP_IOVA_RANGE {
            let n = u32_at(at + 8).unwrap_or(0) as usize;
            for i in 0..n.min(MAX_IOVA_RANGES) {
                let (Some(start), Some(end)) = (u64_at(at + 16 + 16 * i), u64_at(at + 24 + 16 * i))
                else {
                    break;
                };
                ranges.push((start, end));
            }
        }
        if next == 0 {
            break;
        }
        at = next as usize;
    }
    Ok(ranges)
}

/// `VFIO_IOMMU_MAP_DMA`: `len` bytes of this process's memory at `vaddr`,
/// readable and writable by the device at `iova`.
pub(crate) fn type1_map(container: impl AsFd, vaddr: usize, iova: u64, len: u64) -> Result<()> {
    let mut map = DmaMap {
        argsz: size_of::<DmaMap>() as u32,
        flags: DMA_MAP_READ_WRITE,
        vaddr: vaddr as u64,
        iova,
        size: len,
    };
    call_with(container, VFIO_IOMMU_MAP_DMA, &mut map).map(drop)
}

/// `VFIO_IOMMU_UNMAP_DMA`.
pub(crate) fn type1_unmap(container: impl AsFd, iova: u64, len: u64) -> Result<()> {
    let mut unmap = DmaUnmap {
        argsz: size_of::<DmaUnmap>() as u32,
        flags: 0,
        iova,
        size: len,
    };
    call_with(container, VFIO_IOMMU_UNMAP_DMA, &mut unmap).map(drop)
}

/// `IOMMU_IOAS_IOVA_RANGES`: the IOVA ranges of `ioas`, `[start, last]`.
pub(crate) fn ioas_iova_ranges(iommufd: impl AsFd, ioas: u32) -> Result<Vec<(u64, u64)>> {
    let mut ranges = [IovaRange::default(); MAX_IOVA_RANGES];
    let mut q = IoasIovaRanges {
        size: size_of::<IoasIovaRanges>() as u32,
        ioas_id: ioas,
        num_iovas: MAX_IOVA_RANGES as u32,
        allowed_iovas: ranges.as_mut_ptr() as u64,
        ..IoasIovaRanges::default()
    };
    // SAFETY (of the pointer the kernel writes through): `ranges` lives
    // until after the call and holds the `num_iovas` entries declared.
    call_with(iommufd, IOMMU_IOAS_IOVA_RANGES, &mut q)?;
    let n = (q.num_iovas as usize).min(MAX_IOVA_RANGES);
    Ok(ranges
        .get(..n)
        .unwrap_or_default()
        .iter()
        .map(|r| (r.start, r.last))
        .collect())
}

/// `IOMMU_IOAS_MAP` at a fixed IOVA, readable and writable.
pub(crate) fn ioas_map(
    iommufd: impl AsFd,
    ioas: u32,
    vaddr: usize,
    iova: u64,
    len: u64,
) -> Result<()> {
    let mut map = IoasMap {
        size: size_of::<IoasMap>() as u32,
        flags: IOAS_MAP_FIXED_RW,
        ioas_id: ioas,
        reserved: 0,
        user_va: vaddr as u64,
        length: len,
        iova,
    };
    call_with(iommufd, IOMMU_IOAS_MAP, &mut map).map(drop)
}

/// `IOMMU_IOAS_UNMAP`.
pub(crate) fn ioas_unmap(iommufd: impl AsFd, ioas: u32, iova: u64, len: u64) -> Result<()> {
    let mut unmap = IoasUnmap {
        size: size_of::<IoasUnmap>() as u32,
        ioas_id: ioas,
        iova,
        length: len,
    };
    call_with(iommufd, IOMMU_IOAS_UNMAP, &mut unmap).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A number that is not open is refused by the kernel (EBADF), and a
    /// duplicate of an open one leaves the original open.
    #[test]
    fn inherited_fds_are_duplicated_not_taken() {
        assert_eq!(dup_inherited(-1).map(drop), Err(Errno::BADF));
        let (read, _write) = rustix::pipe::pipe().unwrap();
        let raw = read.as_raw_fd();
        let dup = dup_inherited(raw).unwrap();
        assert_ne!(dup.as_raw_fd(), raw);
        drop(dup);
        assert!(rustix::io::fcntl_getfd(&read).is_ok());
        // The highest number a process may have is never open here.
        assert_eq!(dup_inherited(i32::MAX).map(drop), Err(Errno::BADF));
    }

    /// The numbers `vfio-uapi.md` checked with gcc's `_IO` on x86_64.
    #[test]
    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    ))]
    fn opcodes_match_the_uapi() {
        assert_eq!(VFIO_GET_API_VERSION, 0x3b64);
        assert_eq!(VFIO_CHECK_EXTENSION, 0x3b65);
        assert_eq!(VFIO_SET_IOMMU, 0x3b66);
        assert_eq!(VFIO_GROUP_GET_STATUS, 0x3b67);
        assert_eq!(VFIO_GROUP_SET_CONTAINER, 0x3b68);
        assert_eq!(VFIO_GROUP_GET_DEVICE_FD, 0x3b6a);
        assert_eq!(VFIO_DEVICE_GET_INFO, 0x3b6b);
        assert_eq!(VFIO_DEVICE_RESET, 0x3b6f);
        assert_eq!(VFIO_DEVICE_FEATURE, 0x3b75);
        assert_eq!(VFIO_DEVICE_BIND_IOMMUFD, 0x3b76);
        assert_eq!(VFIO_DEVICE_ATTACH_IOMMUFD_PT, 0x3b77);
        assert_eq!(VFIO_MIG_GET_PRECOPY_INFO, 0x3b79);
        assert_eq!(IOMMU_IOAS_ALLOC, 0x3b81);
        assert_eq!(IOMMU_OPTION, 0x3b87);
        assert_eq!(VFIO_DEVICE_GET_REGION_INFO, 0x3b6c);
        assert_eq!(VFIO_IOMMU_GET_INFO, 0x3b70);
        assert_eq!(VFIO_IOMMU_MAP_DMA, 0x3b71);
        assert_eq!(VFIO_IOMMU_UNMAP_DMA, 0x3b72);
        assert_eq!(IOMMU_IOAS_IOVA_RANGES, 0x3b84);
        assert_eq!(IOMMU_IOAS_MAP, 0x3b85);
        assert_eq!(IOMMU_IOAS_UNMAP, 0x3b86);
    }

    /// An ioctl on a file that is not a VFIO device fails with the kernel's
    /// errno (ENOTTY), not a panic or a made-up error.
    #[test]
    fn ioctls_on_a_plain_file_fail_with_enotty() {
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        assert_eq!(migration_flags(&f), Err(Errno::NOTTY));
        assert_eq!(precopy_info(&f).map(drop), Err(Errno::NOTTY));
        assert_eq!(device_info(&f).map(drop), Err(Errno::NOTTY));
        assert_eq!(iommufd_rlimit_mode(&f), Err(Errno::NOTTY));
        assert_eq!(api_version(&f), Err(Errno::NOTTY));
        assert_eq!(region_info(&f, BAR0_REGION).map(drop), Err(Errno::NOTTY));
        assert_eq!(type1_iova_ranges(&f).map(drop), Err(Errno::NOTTY));
        assert_eq!(type1_map(&f, 0, 0x1000, 0x1000), Err(Errno::NOTTY));
        assert_eq!(ioas_iova_ranges(&f, 1).map(drop), Err(Errno::NOTTY));
        assert_eq!(ioas_map(&f, 1, 0, 0x1000, 0x1000), Err(Errno::NOTTY));
    }
}
