//! The platform the fuzz targets drive a [`Device`](mlx5vf_core::device::Device)
//! through: the simulated firmware, real buffer memory, SAVEs that complete
//! only when the fuzz input says so, and knobs for a hostile platform.
//!
//! Adapted from `core/tests/common/mod.rs` (`TestHal`; both keep buffers in
//! [`HostMemory`]), with three changes:
//! - every check of the [`Hal`] contract the core must honour is an
//!   assertion with a message (a failing one is a core bug, reported as a
//!   crash): buffers it names exist, CRC ranges lie inside them, a mapped
//!   buffer is never freed, at most one SAVE is in flight;
//! - the platform refuses allocations above [`MAX_ALLOC_BYTES`] with
//!   `ENOMEM`, as a real one would, so hostile firmware sizes cost nothing;
//! - [`Knobs`] make the platform itself fail (allocation, mapping, command
//!   delivery, starting a SAVE) and make firmware lie (a corrupted command
//!   output).

use std::collections::VecDeque;

use mlx5vf_core::hal::{BufferId, DmaDirection, Hal, HalErrorKind, SaveToken};
use mlx5vf_core::ifc::Command;
use mlx5vf_core::ifc::mkey::{
    DestroyMkey, Mkey, create_mkey_in_len, decode_create_mkey_out, encode_create_mkey_mtt,
};
use mlx5vf_core::ifc::pd::Pd;
use mlx5vf_core::stream::crc32c;
use mlx5vf_sim::firmware::{Accounting, Firmware, FirmwareConfig};
use mlx5vf_sim::host::{HostBuffer, HostMemory};
use mlx5vf_sim::wire::{hdr, opcode};

/// Bytes per page.
pub const PAGE: u64 = 4096;

/// Largest buffer the platform allocates; bigger requests get `ENOMEM`.
///
/// The states the targets use are a few KiB, so only a lying firmware (or a
/// sizing bug) asks for more.
pub const MAX_ALLOC_BYTES: u64 = 16 << 20;

/// A command output firmware lies about: XOR one byte of the output of the
/// `skip + 1`-th command of `opcode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecCorruption {
    /// The opcode whose output is corrupted.
    pub opcode: u16,
    /// Commands of that opcode to let through first.
    pub skip: u32,
    /// Byte of the output (modulo its length).
    pub byte: u16,
    /// Bits to flip (non-zero).
    pub xor: u8,
}

/// Ways the platform (or firmware) misbehaves, each firing once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Knobs {
    /// Fail one buffer allocation after this many more succeed.
    pub fail_alloc_after: Option<u32>,
    /// Fail one `map_buffers` after this many more succeed.
    pub fail_map_after: Option<u32>,
    /// Fail one `start_save` after this many more succeed.
    pub fail_start_save_after: Option<u32>,
    /// Fail delivery of one command (`exec` returns this error without
    /// running it) after this many more succeed.
    pub fail_exec_after: Option<(u32, HalErrorKind)>,
    /// Corrupt one command output.
    pub corrupt_exec: Option<ExecCorruption>,
}

/// What the platform saw, for the targets' invariants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Taint {
    /// Firmware lied in an output that allocates or frees a firmware
    /// resource (PD, mkey), so the sim's resource accounting and the
    /// device's leak counters no longer have to agree.
    pub resource_lie: bool,
    /// Firmware lied in any output (including SAVE completions, which the
    /// targets corrupt themselves and record here too).
    pub lied: bool,
}

/// A SAVE started and not yet executed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingSave {
    /// The token the device gave it.
    pub token: SaveToken,
    /// The SAVE_VHCA_STATE input bytes.
    pub input: Vec<u8>,
}

/// The platform of one device. See the module documentation.
pub struct FuzzHal {
    /// The firmware.
    pub fw: Box<Firmware>,
    /// Buffer memory.
    pub mem: HostMemory,
    next_id: u64,
    next_iova: u64,
    /// SAVEs started and not yet executed (the device allows at most one).
    pub pending: VecDeque<PendingSave>,
    /// Buffers allocated and not freed.
    pub live_buffers: u32,
    /// Their bytes.
    pub live_bytes: u64,
    /// Hostile behaviour to inject.
    pub knobs: Knobs,
    /// Lies told so far.
    pub taint: Taint,
}

impl FuzzHal {
    /// A platform over a new firmware built from `cfg`.
    ///
    /// # Errors
    /// The configuration describes no valid firmware.
    pub fn new(cfg: &FirmwareConfig) -> Result<Self, mlx5vf_sim::ConfigError> {
        Ok(Self {
            fw: Box::new(Firmware::new(cfg)?),
            mem: HostMemory::default(),
            next_id: 1,
            next_iova: 0x1_0000_0000,
            pending: VecDeque::new(),
            live_buffers: 0,
            live_bytes: 0,
            knobs: Knobs::default(),
            taint: Taint::default(),
        })
    }

    /// Runs a command on the firmware, applying [`Knobs::corrupt_exec`].
    fn exec_raw(&mut self, input: &[u8], out: &mut [u8]) {
        let result = self.fw.exec(input, out, &mut self.mem);
        assert!(
            result.is_ok(),
            "a command output buffer of {} bytes cannot hold a status",
            out.len()
        );
        let op = u16::try_from(hdr::OPCODE.get(input)).unwrap_or(u16::MAX);
        if let Some(c) = self.knobs.corrupt_exec.as_mut().filter(|c| c.opcode == op) {
            if c.skip > 0 {
                c.skip -= 1;
            } else {
                let c = *c;
                self.knobs.corrupt_exec = None;
                if !out.is_empty() {
                    let i = usize::from(c.byte) % out.len();
                    out[i] ^= c.xor;
                    self.taint.lied = true;
                    if matches!(
                        op,
                        opcode::ALLOC_PD
                            | opcode::DEALLOC_PD
                            | opcode::CREATE_MKEY
                            | opcode::DESTROY_MKEY
                    ) {
                        self.taint.resource_lie = true;
                    }
                }
            }
        }
    }

    /// Executes the oldest pending SAVE; returns its token and output.
    pub fn run_save(&mut self) -> Option<(SaveToken, Vec<u8>)> {
        let p = self.pending.pop_front()?;
        let mut out = vec![0u8; 16];
        let result = self.fw.exec(&p.input, &mut out, &mut self.mem);
        assert!(result.is_ok(), "SAVE output of 16 bytes refused");
        Some((p.token, out))
    }

    /// Live firmware resources.
    pub fn accounting(&self) -> Accounting {
        self.fw.accounting()
    }

    /// The bytes of buffer `id`.
    ///
    /// # Panics
    /// When the device names a buffer it does not own (a core bug).
    pub fn buffer(&self, id: BufferId) -> &[u8] {
        match self.mem.bufs.get(&id.0) {
            Some(b) => &b.mem,
            None => panic!("the device named buffer {id:?}, which is not allocated"),
        }
    }

    /// The bytes of buffer `id`, mutably.
    ///
    /// # Panics
    /// As [`FuzzHal::buffer`].
    pub fn buffer_mut(&mut self, id: BufferId) -> &mut [u8] {
        match self.mem.bufs.get_mut(&id.0) {
            Some(b) => &mut b.mem,
            None => panic!("the device named buffer {id:?}, which is not allocated"),
        }
    }

    /// `offset..offset + len` of buffer `id`, asserting it lies inside.
    ///
    /// # Panics
    /// When the range is outside the buffer (a core bug).
    pub fn range(&self, id: BufferId, offset: u64, len: u64) -> &[u8] {
        let buf = self.buffer(id);
        let end = offset.checked_add(len);
        match end.filter(|&e| e <= buf.len() as u64) {
            Some(end) => &buf[offset as usize..end as usize],
            None => panic!(
                "the device named bytes {offset}+{len} of buffer {id:?}, which has {}",
                buf.len()
            ),
        }
    }

    /// Counts down a "fail after n" knob; `true` when it fires now.
    fn fire(knob: &mut Option<u32>) -> bool {
        match *knob {
            Some(0) => {
                *knob = None;
                true
            }
            Some(n) => {
                *knob = Some(n - 1);
                false
            }
            None => false,
        }
    }

    fn unmap_iommu(&mut self, buffers: &[BufferId]) {
        for id in buffers {
            if let Some(b) = self.mem.bufs.get_mut(&id.0) {
                assert!(b.maps > 0, "unmapping buffer {id:?}, which is not mapped");
                b.maps -= 1;
                if b.maps == 0 {
                    let r = self.fw.iommu_unmap(b.iova, b.mem.len() as u64);
                    assert!(r.is_ok(), "IOMMU unmap of {id:?}: {r:?}");
                }
            }
        }
    }
}

impl Hal for FuzzHal {
    type Error = HalErrorKind;

    fn exec(&mut self, input: &[u8], output: &mut [u8]) -> Result<(), HalErrorKind> {
        if let Some((n, kind)) = self.knobs.fail_exec_after {
            if n == 0 {
                self.knobs.fail_exec_after = None;
                return Err(kind);
            }
            self.knobs.fail_exec_after = Some((n - 1, kind));
        }
        self.exec_raw(input, output);
        Ok(())
    }

    fn start_save(&mut self, input: &[u8], token: SaveToken) -> Result<(), HalErrorKind> {
        assert!(
            self.pending.is_empty(),
            "a second SAVE started while one is in flight"
        );
        if Self::fire(&mut self.knobs.fail_start_save_after) {
            return Err(HalErrorKind::Delivery);
        }
        self.pending.push_back(PendingSave {
            token,
            input: input.to_vec(),
        });
        Ok(())
    }

    fn alloc_buffer(&mut self, npages: u32, _dir: DmaDirection) -> Result<BufferId, HalErrorKind> {
        assert!(npages > 0, "a buffer of 0 pages was requested");
        if Self::fire(&mut self.knobs.fail_alloc_after) {
            return Err(HalErrorKind::OutOfMemory);
        }
        let len = u64::from(npages) * PAGE;
        if len > MAX_ALLOC_BYTES {
            return Err(HalErrorKind::OutOfMemory);
        }
        let id = self.next_id;
        self.next_id += 1;
        let iova = self.next_iova;
        self.next_iova += len + PAGE;
        self.mem.bufs.insert(
            id,
            HostBuffer {
                mem: vec![0; len as usize],
                iova,
                maps: 0,
            },
        );
        self.live_buffers += 1;
        self.live_bytes += len;
        Ok(BufferId(id))
    }

    fn map_buffers(&mut self, pd: Pd, buffers: &[BufferId]) -> Result<Mkey, HalErrorKind> {
        if Self::fire(&mut self.knobs.fail_map_after) {
            return Err(HalErrorKind::OutOfMemory);
        }
        let mut pages = vec![];
        let mut mapped: Vec<BufferId> = vec![];
        for id in buffers {
            let Some(b) = self.mem.bufs.get_mut(&id.0) else {
                panic!("the device maps buffer {id:?}, which is not allocated");
            };
            if b.maps == 0 && self.fw.iommu_map(b.iova, b.mem.len() as u64).is_err() {
                self.unmap_iommu(&mapped);
                return Err(HalErrorKind::Other);
            }
            b.maps += 1;
            mapped.push(*id);
            pages.extend((0..b.mem.len() as u64 / PAGE).map(|p| b.iova + p * PAGE));
        }
        let Ok(npages) = u32::try_from(pages.len()) else {
            self.unmap_iommu(&mapped);
            return Err(HalErrorKind::OutOfMemory);
        };
        let mut input = vec![0u8; create_mkey_in_len(npages)];
        if encode_create_mkey_mtt(&mut input, pd, pages.iter().copied()).is_err() {
            self.unmap_iommu(&mapped);
            return Err(HalErrorKind::Other);
        }
        let mut out = [0u8; 16];
        self.exec_raw(&input, &mut out);
        match decode_create_mkey_out(&out) {
            Ok(mkey) => Ok(mkey),
            Err(_) => {
                self.unmap_iommu(&mapped);
                Err(HalErrorKind::Other)
            }
        }
    }

    fn unmap_buffers(&mut self, mkey: Mkey, buffers: &[BufferId]) -> Result<(), HalErrorKind> {
        let cmd = DestroyMkey { mkey };
        let mut input = [0u8; 16];
        let encoded = cmd.encode(&mut input);
        assert!(encoded.is_ok(), "DESTROY_MKEY encode: {encoded:?}");
        let mut out = [0u8; 16];
        self.exec_raw(&input, &mut out);
        self.unmap_iommu(buffers);
        cmd.decode(&out).map_err(|_| HalErrorKind::Other)
    }

    fn free_buffer(&mut self, buffer: BufferId) {
        let Some(b) = self.mem.bufs.remove(&buffer.0) else {
            panic!("the device freed buffer {buffer:?} twice (or never allocated it)");
        };
        assert_eq!(b.maps, 0, "the device freed buffer {buffer:?} while mapped");
        self.live_buffers -= 1;
        self.live_bytes -= b.mem.len() as u64;
    }

    fn crc32c(&mut self, buffer: BufferId, offset: u64, len: u64, crc: u32) -> u32 {
        crc32c::update(crc, self.range(buffer, offset, len))
    }
}
