//! [`TestHal`]: the simulated firmware, real buffer memory, and SAVEs that
//! complete only when the test says so.

use std::boxed::Box;
use std::collections::VecDeque;
use std::vec;
use std::vec::Vec;

use mlx5vf_core::hal::{
    BufferId, DmaDirection, Hal, HalErrorKind, LoadToken, ReportChannel, ReportChannelRequest,
    ReportEvent, SaveToken,
};
use mlx5vf_core::ifc::Command;
use mlx5vf_core::ifc::mkey::{
    DestroyMkey, Mkey, create_mkey_in_len, decode_create_mkey_out, encode_create_mkey_mtt,
};
use mlx5vf_core::ifc::pd::Pd;
use mlx5vf_core::stream::crc32c;

use super::{Knobs, Platform, Taint};
use crate::firmware::{Accounting, ConfigError, Firmware, FirmwareConfig};
use crate::host::{HostBuffer, HostMemory};
use crate::spec::SimSpec;

/// Bytes per page.
pub const PAGE: u64 = 4096;

/// Where the first buffer sits in IO virtual address space.
const FIRST_IOVA: u64 = 0x1_0000_0000;

/// A SAVE started and not yet executed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingSave {
    /// The token the device gave it.
    pub token: SaveToken,
    /// The SAVE_VHCA_STATE input bytes.
    pub input: Vec<u8>,
}

/// A LOAD started and not yet executed (platforms with
/// [`TestHal::async_load`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingLoad {
    /// The token the device gave it.
    pub token: LoadToken,
    /// The LOAD_VHCA_STATE input bytes.
    pub input: Vec<u8>,
}

/// The platform of one device.
///
/// Every check of the [`Hal`] contract the core must honour is an assertion
/// with a message, so a failing one names the core bug: buffers it names
/// exist, CRC ranges lie inside them, a mapped buffer is never freed, at
/// most one SAVE is in flight. [`TestHal::knobs`] make the platform fail and
/// firmware lie, including in the commands `map_buffers` and `unmap_buffers`
/// issue themselves.
#[derive(Debug)]
pub struct TestHal {
    /// The firmware.
    pub fw: Box<Firmware>,
    /// Buffer memory.
    pub mem: HostMemory,
    next_id: u64,
    next_iova: u64,
    /// Largest buffer `alloc_buffer` grants; bigger requests get
    /// `OutOfMemory`, as on a real platform, so a lying firmware's sizes
    /// cost nothing. Unlimited unless set.
    pub alloc_limit: u64,
    /// SAVEs started and not yet executed (the device allows at most one).
    pub pending: VecDeque<PendingSave>,
    /// SAVEs started so far.
    pub saves_started: u32,
    /// LOADs run asynchronously: `start_load` queues them in
    /// [`TestHal::pending_loads`] until the test runs them. Off by default
    /// (the core then LOADs synchronously through `exec`).
    pub async_load: bool,
    /// LOADs started and not yet executed (the device allows at most one).
    pub pending_loads: VecDeque<PendingLoad>,
    /// `(actual_image_size, next_required_umem_size)` of every successful
    /// SAVE run.
    pub save_log: Vec<(u32, u32)>,
    /// Buffers allocated and not freed.
    pub live_buffers: u32,
    /// Their bytes.
    pub live_bytes: u64,
    /// Failures and lies to inject.
    pub knobs: Knobs,
    /// Lies told so far.
    pub taint: Taint,
    /// The page tracker's reporting channel, while open.
    pub report: Option<crate::report_host::HostChannel>,
    /// Whether `report_channel_open` offers a channel (default `true`).
    pub report_channel_supported: bool,
    /// Make `report_channel_next` report a CQ/WQ error event.
    pub report_channel_broken: bool,
}

impl TestHal {
    /// A platform over the firmware `spec` describes.
    ///
    /// # Panics
    /// On a spec that does not parse or describes no valid firmware.
    pub fn new(spec: &str) -> Self {
        Self::with_config(&firmware_config(spec))
    }

    /// A platform over a new firmware built from `cfg`.
    ///
    /// # Panics
    /// When `cfg` describes no valid firmware.
    pub fn with_config(cfg: &FirmwareConfig) -> Self {
        match Self::try_with_config(cfg) {
            Ok(hal) => hal,
            Err(e) => panic!("firmware config {cfg:?}: {e}"),
        }
    }

    /// A platform over a new firmware built from `cfg`.
    ///
    /// # Errors
    /// The configuration describes no valid firmware.
    pub fn try_with_config(cfg: &FirmwareConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            fw: Box::new(Firmware::new(cfg)?),
            mem: HostMemory::default(),
            next_id: 1,
            next_iova: FIRST_IOVA,
            alloc_limit: u64::MAX,
            pending: VecDeque::new(),
            saves_started: 0,
            async_load: false,
            pending_loads: VecDeque::new(),
            save_log: Vec::new(),
            live_buffers: 0,
            live_bytes: 0,
            knobs: Knobs::default(),
            taint: Taint::default(),
            report: None,
            report_channel_supported: true,
            report_channel_broken: false,
        })
    }

    /// This platform, LOADing asynchronously.
    #[must_use]
    pub fn with_async_load(mut self) -> Self {
        self.async_load = true;
        self
    }

    /// Executes the oldest pending LOAD; returns its token and output.
    pub fn run_load(&mut self) -> Option<(LoadToken, Vec<u8>)> {
        let p = self.pending_loads.pop_front()?;
        let mut out = vec![0u8; 16];
        let result = self.fw.exec(&p.input, &mut out, &mut self.mem);
        assert!(result.is_ok(), "LOAD output of 16 bytes refused");
        Some((p.token, out))
    }

    /// This platform, refusing buffers above `bytes`.
    #[must_use]
    pub fn with_alloc_limit(mut self, bytes: u64) -> Self {
        self.alloc_limit = bytes;
        self
    }

    /// Runs a command on the firmware, applying [`Knobs::corrupt_exec`].
    fn exec_raw(&mut self, input: &[u8], out: &mut [u8]) {
        let result = self.fw.exec(input, out, &mut self.mem);
        assert!(
            result.is_ok(),
            "a command output buffer of {} bytes cannot hold a status",
            out.len()
        );
        self.knobs.after_exec(input, out, &mut self.taint);
    }

    /// Executes the oldest pending SAVE; returns its token and output.
    /// Firmware tells the truth here: a harness that wants a lying
    /// completion corrupts the output itself.
    pub fn run_save(&mut self) -> Option<(SaveToken, Vec<u8>)> {
        let p = self.pending.pop_front()?;
        let mut out = vec![0u8; 16];
        let result = self.fw.exec(&p.input, &mut out, &mut self.mem);
        assert!(result.is_ok(), "SAVE output of 16 bytes refused");
        if out[0] == 0 {
            let word = |i: usize| u32::from_be_bytes([out[i], out[i + 1], out[i + 2], out[i + 3]]);
            self.save_log.push((word(8), word(12)));
        }
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
    /// As [`TestHal::buffer`].
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

    /// `offset..offset + len` of buffer `id`, mutably, asserting it lies
    /// inside.
    ///
    /// # Panics
    /// As [`TestHal::range`].
    pub fn range_mut(&mut self, id: BufferId, offset: u64, len: u64) -> &mut [u8] {
        let buf = self.buffer_mut(id);
        let has = buf.len();
        match offset.checked_add(len).filter(|&e| e <= has as u64) {
            Some(end) => &mut buf[offset as usize..end as usize],
            None => {
                panic!("the device named bytes {offset}+{len} of buffer {id:?}, which has {has}")
            }
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

/// The firmware a spec string describes.
///
/// # Panics
/// On a spec that does not parse (tests use constant ones).
pub fn firmware_config(spec: &str) -> FirmwareConfig {
    let spec: SimSpec = match spec.parse() {
        Ok(s) => s,
        Err(e) => panic!("bad sim spec {spec:?}: {e}"),
    };
    FirmwareConfig::from_spec(&spec)
}

impl Hal for TestHal {
    type Error = HalErrorKind;

    fn exec(&mut self, input: &[u8], output: &mut [u8]) -> Result<(), HalErrorKind> {
        self.knobs.on_exec(input)?;
        self.exec_raw(input, output);
        Ok(())
    }

    fn start_save(&mut self, input: &[u8], token: SaveToken) -> Result<(), HalErrorKind> {
        assert!(
            self.pending.is_empty(),
            "a second SAVE started while one is in flight"
        );
        self.knobs.on_start_save()?;
        self.saves_started += 1;
        self.pending.push_back(PendingSave {
            token,
            input: input.to_vec(),
        });
        Ok(())
    }

    fn start_load(&mut self, input: &[u8], token: LoadToken) -> Result<bool, HalErrorKind> {
        if !self.async_load {
            return Ok(false);
        }
        assert!(
            self.pending_loads.is_empty(),
            "a second LOAD started while one is in flight"
        );
        assert!(
            self.pending.is_empty(),
            "a LOAD started while a SAVE is in flight"
        );
        self.knobs.on_exec(input)?;
        self.pending_loads.push_back(PendingLoad {
            token,
            input: input.to_vec(),
        });
        Ok(true)
    }

    fn alloc_buffer(&mut self, npages: u32, _dir: DmaDirection) -> Result<BufferId, HalErrorKind> {
        assert!(npages > 0, "a buffer of 0 pages was requested");
        self.knobs.on_alloc()?;
        let len = u64::from(npages) * PAGE;
        if len > self.alloc_limit {
            return Err(HalErrorKind::OutOfMemory);
        }
        let id = self.next_id;
        self.next_id += 1;
        let iova = self.next_iova;
        // Leave a guard page between buffers so an off-by-one DMA faults.
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
        self.knobs.on_map()?;
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

    fn report_channel_open(
        &mut self,
        req: ReportChannelRequest,
    ) -> Result<Option<ReportChannel>, HalErrorKind> {
        self.channel_open(req)
    }

    fn report_channel_next(
        &mut self,
        cqe: &mut [u8; 64],
        _timeout_ns: u64,
    ) -> Result<ReportEvent, HalErrorKind> {
        Ok(self.channel_next(cqe))
    }

    fn report_channel_read(
        &mut self,
        slot: u32,
        offset: u32,
        dst: &mut [u8],
    ) -> Result<bool, HalErrorKind> {
        Ok(self.channel_read(slot, offset, dst))
    }

    fn report_channel_repost(&mut self, _slot: u32) -> Result<(), HalErrorKind> {
        self.fw.tracker_mut().repost();
        Ok(())
    }

    fn report_channel_close(&mut self) {
        self.channel_close();
    }
}

impl Platform for TestHal {
    fn test_hal(&self) -> &TestHal {
        self
    }

    fn test_hal_mut(&mut self) -> &mut TestHal {
        self
    }

    fn taint(&self) -> Taint {
        self.taint
    }

    fn disarm(&mut self) {
        self.knobs = Knobs::default();
    }
}
