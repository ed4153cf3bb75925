//! The [`Hal`] over a PF's command queue: every command through
//! [`Port`], SAVE and LOAD asynchronously, DMA buffers
//! from the port's memory, mapped through the transport's IOMMU when the
//! core maps them and unmapped when it unmaps them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use mlx5vf_core::cmdq::SlotClass;
use mlx5vf_core::hal::{BufferId, DmaDirection, Hal, LoadToken, SaveToken};
use mlx5vf_core::ifc::Command;
use mlx5vf_core::ifc::mkey::{
    DestroyMkey, Mkey, create_mkey_in_len, decode_create_mkey_out, encode_create_mkey_mtt,
};
use mlx5vf_core::ifc::pd::Pd;

use super::error::PfError;
use super::memory::PAGE;
use super::port::{AsyncDone, Port};
use super::transport::Transport;

/// Output bytes of SAVE and LOAD (`save_vhca_state_out`, `load_vhca_state_out`).
const ASYNC_OUT: usize = 16;

/// The platform of a device whose PF this process drives.
pub struct CmdqHal<T: Transport> {
    port: Arc<Port<T>>,
    async_load: bool,
    /// Memory keys mapping each buffer (by IOVA): mapped in the IOMMU
    /// while non-zero.
    maps: HashMap<u64, u32>,
    /// Buffers whose unmap the IOMMU refused: still mapped, so never freed
    /// as if they were not (freeing tries again, then quarantines).
    stale: HashSet<u64>,
    origin: Instant,
}

impl<T: Transport> std::fmt::Debug for CmdqHal<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CmdqHal")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl<T: Transport> CmdqHal<T> {
    /// A platform over `port`; LOADs run asynchronously unless `async_load`
    /// is off (as the Linux driver LOADs).
    pub fn new(port: Arc<Port<T>>, async_load: bool) -> Self {
        Self {
            port,
            async_load,
            maps: HashMap::new(),
            stale: HashSet::new(),
            origin: Instant::now(),
        }
    }

    /// The command queue.
    pub fn port(&self) -> &Arc<Port<T>> {
        &self.port
    }

    fn unmap_iommu(&mut self, buffers: &[BufferId]) {
        for id in buffers {
            if let Some(n) = self.maps.get_mut(&id.0) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.maps.remove(&id.0);
                    let inner = self.port.inner();
                    if let Some(r) = inner.space.get(id.0) {
                        if let Err(error) = inner.transport.unmap_dma(&r) {
                            inner.record(&PfError::Io {
                                step: "unmap a migration buffer",
                                error,
                            });
                            self.stale.insert(id.0);
                        }
                    }
                }
            }
        }
    }

    fn map_iommu(&mut self, id: BufferId) -> Result<Vec<u64>, PfError> {
        let inner = self.port.inner();
        let r = inner
            .space
            .get(id.0)
            .ok_or(PfError::Memory("an unknown buffer"))?;
        // A buffer whose unmap failed is mapped still: nothing to map again.
        if !self.maps.contains_key(&id.0) && !self.stale.remove(&id.0) {
            inner
                .transport
                .map_dma(&r)
                .map_err(PfError::io("map a migration buffer"))?;
        }
        *self.maps.entry(id.0).or_insert(0) += 1;
        Ok((0..r.len() / PAGE).map(|p| r.iova() + p * PAGE).collect())
    }
}

impl<T: Transport> Hal for CmdqHal<T> {
    type Error = PfError;

    fn now_ns(&mut self) -> Option<u64> {
        u64::try_from(self.origin.elapsed().as_nanos()).ok()
    }

    fn exec(&mut self, input: &[u8], output: &mut [u8]) -> Result<(), PfError> {
        self.port.exec(SlotClass::Command, input, output)
    }

    fn start_save(&mut self, input: &[u8], token: SaveToken) -> Result<(), PfError> {
        self.port.start(input, ASYNC_OUT, AsyncDone::Save(token))
    }

    fn start_load(&mut self, input: &[u8], token: LoadToken) -> Result<bool, PfError> {
        if !self.async_load {
            return Ok(false);
        }
        self.port.start(input, ASYNC_OUT, AsyncDone::Load(token))?;
        Ok(true)
    }

    fn alloc_buffer(&mut self, npages: u32, _dir: DmaDirection) -> Result<BufferId, PfError> {
        let r = self
            .port
            .inner()
            .allocate(u64::from(npages), false, "a migration buffer")?;
        Ok(BufferId(r.iova()))
    }

    fn map_buffers(&mut self, pd: Pd, buffers: &[BufferId]) -> Result<Mkey, PfError> {
        let mut pages = Vec::new();
        for (i, id) in buffers.iter().enumerate() {
            match self.map_iommu(*id) {
                Ok(p) => pages.extend(p),
                Err(e) => {
                    self.unmap_iommu(buffers.get(..i).unwrap_or_default());
                    self.port.inner().record(&e);
                    return Err(e);
                }
            }
        }
        let result = u32::try_from(pages.len())
            .map_err(|_| PfError::Memory("one memory key"))
            .and_then(|npages| {
                let mut input = vec![0u8; create_mkey_in_len(npages)];
                let len = encode_create_mkey_mtt(&mut input, pd, pages.iter().copied())
                    .map_err(|e| PfError::Protocol(format!("CREATE_MKEY: {e}")))?;
                let mut out = [0u8; 16];
                self.port.exec(
                    SlotClass::Command,
                    input.get(..len).unwrap_or_default(),
                    &mut out,
                )?;
                decode_create_mkey_out(&out).map_err(PfError::firmware("CREATE_MKEY"))
            });
        if let Err(e) = &result {
            self.port.inner().record(e);
            self.unmap_iommu(buffers);
        }
        result
    }

    fn unmap_buffers(&mut self, mkey: Mkey, buffers: &[BufferId]) -> Result<(), PfError> {
        let cmd = DestroyMkey { mkey };
        let mut input = [0u8; 16];
        let mut out = [0u8; 16];
        let result = cmd
            .encode(&mut input)
            .map_err(PfError::encode("DESTROY_MKEY"))
            .and_then(|_| self.port.exec(SlotClass::Command, &input, &mut out))
            .and_then(|()| cmd.decode(&out).map_err(PfError::firmware("DESTROY_MKEY")));
        self.unmap_iommu(buffers);
        result
    }

    fn free_buffer(&mut self, buffer: BufferId) {
        let inner = self.port.inner();
        if let Some(r) = inner.space.get(buffer.0) {
            // Still mapped if the core broke its contract (unmap then) or an
            // unmap failed (try again; quarantined if it fails again).
            let mapped = self.maps.remove(&buffer.0).is_some() | self.stale.remove(&buffer.0);
            inner.release(&r, mapped);
        }
    }

    fn crc32c(&mut self, buffer: BufferId, offset: u64, len: u64, crc: u32) -> u32 {
        self.port
            .inner()
            .space
            .get(buffer.0)
            .and_then(|r| r.with_bytes(offset, len, |s| crc32c_update(crc, s)).ok())
            .unwrap_or(!crc)
    }
}

/// CRC-32C with the hardware instruction where the `crc32c` crate is built
/// in (the `sim` feature brings it), else the core's portable one.
fn crc32c_update(crc: u32, bytes: &[u8]) -> u32 {
    #[cfg(feature = "sim")]
    {
        crc32c::crc32c_append(crc, bytes)
    }
    #[cfg(not(feature = "sim"))]
    {
        mlx5vf_core::stream::crc32c::update(crc, bytes)
    }
}
