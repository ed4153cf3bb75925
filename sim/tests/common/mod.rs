//! Test-side command builders and host memory.
//!
//! The builders write fields at the *byte* offsets of `reference/mlx5-ifc.md`
//! (not through `mlx5vf_sim::wire`), so the sim's own field table is checked
//! against the fact sheet rather than against itself.
#![allow(dead_code, unreachable_pub, missing_docs)]

use mlx5vf_sim::{Dma, DmaFault, Firmware, FirmwareConfig, SimSpec, Syndrome};

pub const PAGE: u64 = 4096;

pub mod op {
    pub const QUERY_HCA_CAP: u16 = 0x100;
    pub const CREATE_MKEY: u16 = 0x200;
    pub const DESTROY_MKEY: u16 = 0x202;
    pub const SUSPEND_VHCA: u16 = 0x115;
    pub const RESUME_VHCA: u16 = 0x116;
    pub const QUERY_MIG: u16 = 0x117;
    pub const SAVE: u16 = 0x118;
    pub const LOAD: u16 = 0x119;
    pub const ALLOC_PD: u16 = 0x800;
    pub const DEALLOC_PD: u16 = 0x801;
}

pub mod st {
    pub const OK: u8 = 0x00;
    pub const INT_ERR: u8 = 0x01;
    pub const BAD_OP: u8 = 0x02;
    pub const BAD_PARAM: u8 = 0x03;
    pub const RES_BUSY: u8 = 0x06;
    pub const LIM: u8 = 0x08;
    pub const BAD_RES_STATE: u8 = 0x09;
    pub const BAD_INP_LEN: u8 = 0x50;
    pub const BAD_OUTP_LEN: u8 = 0x51;
}

/// A command buffer with byte-offset setters.
#[derive(Clone, Debug)]
pub struct Cmd(pub Vec<u8>);

impl Cmd {
    pub fn new(opcode: u16, op_mod: u16, len: usize) -> Self {
        let mut c = Self(vec![0; len]);
        c.put16(0, opcode);
        c.put16(6, op_mod);
        c
    }
    pub fn put8(&mut self, at: usize, v: u8) -> &mut Self {
        self.0[at] = v;
        self
    }
    pub fn or8(&mut self, at: usize, v: u8) -> &mut Self {
        self.0[at] |= v;
        self
    }
    pub fn put16(&mut self, at: usize, v: u16) -> &mut Self {
        self.0[at..at + 2].copy_from_slice(&v.to_be_bytes());
        self
    }
    pub fn put24(&mut self, at: usize, v: u32) -> &mut Self {
        self.0[at..at + 3].copy_from_slice(&v.to_be_bytes()[1..]);
        self
    }
    pub fn put32(&mut self, at: usize, v: u32) -> &mut Self {
        self.0[at..at + 4].copy_from_slice(&v.to_be_bytes());
        self
    }
    pub fn put64(&mut self, at: usize, v: u64) -> &mut Self {
        self.0[at..at + 8].copy_from_slice(&v.to_be_bytes());
        self
    }
}

/// A command's output.
#[derive(Clone, Debug)]
pub struct Out(pub Vec<u8>);

impl Out {
    pub fn status(&self) -> u8 {
        self.0[0]
    }
    pub fn syndrome(&self) -> u32 {
        self.u32(4)
    }
    pub fn u32(&self, at: usize) -> u32 {
        u32::from_be_bytes(self.0[at..at + 4].try_into().unwrap())
    }
    pub fn u24(&self, at: usize) -> u32 {
        u32::from_be_bytes([0, self.0[at], self.0[at + 1], self.0[at + 2]])
    }
    pub fn u64(&self, at: usize) -> u64 {
        u64::from_be_bytes(self.0[at..at + 8].try_into().unwrap())
    }
    /// Assert a refusal with exactly this syndrome (and its status).
    #[track_caller]
    pub fn refused(&self, s: Syndrome) {
        assert_eq!(
            (self.status(), Syndrome::from_code(self.syndrome())),
            (s.status(), Some(s)),
            "expected {s}, got status {:#x} syndrome {:#010x}",
            self.status(),
            self.syndrome()
        );
    }
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.status(),
            st::OK,
            "command failed: status {:#x} syndrome {:?}",
            self.status(),
            Syndrome::from_code(self.syndrome())
        );
        self
    }
}

/// Host memory regions at IOVAs.
#[derive(Debug, Default)]
pub struct HostMem {
    regions: Vec<(u64, Vec<u8>)>,
    /// Fail the next this-many DMA calls.
    pub fail_calls: u32,
    /// DMA calls served.
    pub calls: u64,
    /// The longest access the host takes (`Dma::max_access`); longer ones
    /// fault.
    pub max_access: Option<usize>,
    /// The longest access asked for.
    pub longest: usize,
}

impl HostMem {
    pub fn add(&mut self, iova: u64, len: usize) {
        self.regions.push((iova, vec![0; len]));
    }
    pub fn remove(&mut self, iova: u64) {
        self.regions.retain(|(i, _)| *i != iova);
    }
    pub fn bytes_mut(&mut self, iova: u64) -> &mut Vec<u8> {
        &mut self.regions.iter_mut().find(|(i, _)| *i == iova).unwrap().1
    }
    fn find(&mut self, iova: u64, len: usize) -> Result<&mut [u8], DmaFault> {
        if self.fail_calls > 0 {
            self.fail_calls -= 1;
            return Err(DmaFault);
        }
        self.calls += 1;
        self.longest = self.longest.max(len);
        if self.max_access.is_some_and(|m| len > m) {
            return Err(DmaFault);
        }
        for (base, bytes) in &mut self.regions {
            if iova >= *base && iova + len as u64 <= *base + bytes.len() as u64 {
                let off = (iova - *base) as usize;
                return Ok(&mut bytes[off..off + len]);
            }
        }
        Err(DmaFault)
    }
}

impl Dma for HostMem {
    fn dma_write(
        &mut self,
        iova: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), DmaFault> {
        fill(self.find(iova, len)?);
        Ok(())
    }
    fn dma_read(
        &mut self,
        iova: u64,
        len: usize,
        consume: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DmaFault> {
        consume(self.find(iova, len)?);
        Ok(())
    }
    fn max_access(&self) -> usize {
        self.max_access.unwrap_or(usize::MAX)
    }
}

/// A DMA buffer: host memory at an IOVA, IOMMU-mapped, with an MTT mkey.
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    pub iova: u64,
    pub len: u64,
    pub key: u32,
}

/// Firmware(s) plus host memory; the firmwares share the host memory (so a
/// destination can LOAD straight from the buffer a source SAVEd into).
pub struct Rig {
    pub fws: Vec<Box<Firmware>>,
    pub mem: HostMem,
    next_iova: u64,
}

pub fn spec(s: &str) -> FirmwareConfig {
    FirmwareConfig::from_spec(&SimSpec::parse(s).unwrap())
}

impl Rig {
    pub fn new(configs: &[FirmwareConfig]) -> Self {
        Self {
            fws: configs
                .iter()
                .map(|c| Box::new(Firmware::new(c).unwrap()))
                .collect(),
            mem: HostMem::default(),
            next_iova: 0x1_0000_0000,
        }
    }

    pub fn one(s: &str) -> Self {
        Self::new(&[spec(s)])
    }

    pub fn fw(&mut self, f: usize) -> &mut Firmware {
        &mut self.fws[f]
    }

    pub fn exec(&mut self, f: usize, cmd: &Cmd, out_len: usize) -> Out {
        let mut out = vec![0xa5; out_len];
        self.fws[f].exec(&cmd.0, &mut out, &mut self.mem).unwrap();
        Out(out)
    }

    // --- caps ---
    pub fn query_cap(&mut self, f: usize, function: Option<u16>, op_mod: u16) -> Out {
        let mut c = Cmd::new(op::QUERY_HCA_CAP, op_mod, 16);
        if let Some(id) = function {
            c.or8(8, 0x80).put16(10, id);
        }
        self.exec(f, &c, 4112)
    }

    /// VF n's vhca_id the way Linux finds it: general caps, CUR, other function n+1.
    pub fn vhca(&mut self, f: usize, vf: u16) -> u16 {
        let out = self.query_cap(f, Some(vf + 1), 0x01);
        out.ok();
        u16::from_be_bytes([out.0[22], out.0[23]])
    }

    // --- PD / mkey ---
    pub fn alloc_pd(&mut self, f: usize) -> u32 {
        let out = self.exec(f, &Cmd::new(op::ALLOC_PD, 0, 16), 16);
        out.ok().u24(9)
    }

    pub fn dealloc_pd(&mut self, f: usize, pd: u32) -> Out {
        let mut c = Cmd::new(op::DEALLOC_PD, 0, 16);
        c.put24(9, pd);
        self.exec(f, &c, 16)
    }

    /// CREATE_MKEY as the kernel builds it (MTT mode, 4 KiB pages, va 0).
    pub fn mkey_cmd(pd: u32, iovas: &[u64], variant: u8) -> Cmd {
        let n = iovas.len();
        let mut c = Cmd::new(op::CREATE_MKEY, 0, 272 + 8 * n.next_multiple_of(2));
        let octwords = n.div_ceil(2) as u32;
        c.put8(18, 0x3d) // rw rr lw lr, access_mode_1_0 = MTT
            .put24(20, 0xff_ffff) // qpn
            .put8(23, variant) // mkey_7_0
            .put24(29, pd)
            .put64(32, 0) // start_addr
            .put64(40, n as u64 * PAGE) // len
            .put32(68, octwords) // translations_octword_size
            .put8(75, 12) // log_page_size
            .put32(96, octwords); // translations_octword_actual_size
        for (i, iova) in iovas.iter().enumerate() {
            c.put64(272 + 8 * i, *iova);
        }
        c
    }

    pub fn create_mkey(&mut self, f: usize, pd: u32, iovas: &[u64], variant: u8) -> u32 {
        let out = self.exec(f, &Self::mkey_cmd(pd, iovas, variant), 16);
        (out.ok().u24(9) << 8) | u32::from(variant)
    }

    pub fn destroy_mkey(&mut self, f: usize, key: u32) -> Out {
        let mut c = Cmd::new(op::DESTROY_MKEY, 0, 16);
        c.put24(9, key >> 8);
        self.exec(f, &c, 16)
    }

    /// Host memory + IOMMU mapping in every firmware, and an mkey in `f`.
    pub fn buffer(&mut self, f: usize, pd: u32, len: u64) -> Buf {
        let len = len.div_ceil(PAGE) * PAGE;
        let iova = self.next_iova;
        self.next_iova += len + 16 * PAGE;
        self.mem.add(iova, len as usize);
        for fw in &mut self.fws {
            fw.iommu_map(iova, len).unwrap();
        }
        let pages: Vec<u64> = (0..len / PAGE).map(|p| iova + p * PAGE).collect();
        let key = self.create_mkey(f, pd, &pages, 0x5a);
        Buf { iova, len, key }
    }

    /// An extra mkey over an existing buffer, in firmware `f`.
    pub fn share(&mut self, f: usize, pd: u32, buf: Buf) -> Buf {
        let pages: Vec<u64> = (0..buf.len / PAGE).map(|p| buf.iova + p * PAGE).collect();
        Buf {
            key: self.create_mkey(f, pd, &pages, 0x77),
            ..buf
        }
    }

    pub fn drop_mkey(&mut self, f: usize, buf: Buf) {
        self.destroy_mkey(f, buf.key).ok();
    }

    /// Unmap and free a buffer's memory (its mkeys must be gone).
    pub fn free(&mut self, buf: Buf) {
        for fw in &mut self.fws {
            fw.iommu_unmap(buf.iova, buf.len).unwrap();
        }
        self.mem.remove(buf.iova);
    }

    // --- VHCA ---
    pub fn vhca_cmd(opcode: u16, op_mod: u16, vhca: u16) -> Cmd {
        let mut c = Cmd::new(opcode, op_mod, 16);
        c.put16(10, vhca);
        c
    }
    pub fn suspend(&mut self, f: usize, vhca: u16, responder: bool) -> Out {
        self.exec(
            f,
            &Self::vhca_cmd(op::SUSPEND_VHCA, u16::from(responder), vhca),
            16,
        )
    }
    pub fn resume(&mut self, f: usize, vhca: u16, initiator: bool) -> Out {
        self.exec(
            f,
            &Self::vhca_cmd(op::RESUME_VHCA, u16::from(initiator), vhca),
            16,
        )
    }
    /// RUNNING → RUNNING_P2P → STOP.
    pub fn stop(&mut self, f: usize, vhca: u16) {
        self.suspend(f, vhca, false).ok();
        self.suspend(f, vhca, true).ok();
    }
    /// STOP → RUNNING_P2P → RUNNING.
    pub fn run(&mut self, f: usize, vhca: u16) {
        self.resume(f, vhca, false).ok();
        self.resume(f, vhca, true).ok();
    }

    pub fn query_cmd(vhca: u16, inc: bool, chunk: bool) -> Cmd {
        let mut c = Cmd::new(op::QUERY_MIG, 0, 16);
        c.put16(10, vhca)
            .or8(8, if inc { 0x80 } else { 0 } | if chunk { 0x40 } else { 0 });
        c
    }
    pub fn query(&mut self, f: usize, vhca: u16, inc: bool, chunk: bool) -> Out {
        self.exec(f, &Self::query_cmd(vhca, inc, chunk), 64)
    }
    /// (required_umem_size, remaining_total_size) of a successful QUERY.
    pub fn query_ok(&mut self, f: usize, vhca: u16, inc: bool, chunk: bool) -> (u32, u64) {
        let out = self.query(f, vhca, inc, chunk);
        out.ok();
        (out.u32(16), out.u64(24))
    }

    pub fn save_cmd(vhca: u16, inc: bool, track: bool, buf: Buf, size: u32) -> Cmd {
        let mut c = Cmd::new(op::SAVE, 0, 32);
        c.put16(10, vhca)
            .or8(8, if inc { 0x80 } else { 0 } | if track { 0x40 } else { 0 })
            .put64(16, 0)
            .put32(24, buf.key)
            .put32(28, size);
        c
    }
    pub fn save(
        &mut self,
        f: usize,
        vhca: u16,
        inc: bool,
        track: bool,
        buf: Buf,
        size: u32,
    ) -> Out {
        self.exec(f, &Self::save_cmd(vhca, inc, track, buf, size), 16)
    }
    /// (actual_image_size, next_required_umem_size) of a successful SAVE.
    pub fn save_ok(
        &mut self,
        f: usize,
        vhca: u16,
        inc: bool,
        track: bool,
        buf: Buf,
        size: u32,
    ) -> (u32, u32) {
        let out = self.save(f, vhca, inc, track, buf, size);
        out.ok();
        (out.u32(8), out.u32(12))
    }

    pub fn load_cmd(vhca: u16, buf: Buf, size: u32) -> Cmd {
        let mut c = Cmd::new(op::LOAD, 0, 32);
        c.put16(10, vhca)
            .put64(16, 0)
            .put32(24, buf.key)
            .put32(28, size);
        c
    }
    pub fn load(&mut self, f: usize, vhca: u16, buf: Buf, size: u32) -> Out {
        self.exec(f, &Self::load_cmd(vhca, buf, size), 16)
    }

    /// Every firmware's accounting is zero.
    #[track_caller]
    pub fn assert_clean(&self) {
        for fw in &self.fws {
            assert!(fw.accounting().is_zero(), "leak: {:?}", fw.accounting());
        }
    }
}

/// One endpoint of a migration: firmware index, VF, vhca_id.
#[derive(Clone, Copy, Debug)]
pub struct End {
    pub fw: usize,
    pub vf: u16,
    pub vhca: u16,
}

impl Rig {
    pub fn end(&mut self, fw: usize, vf: u16) -> End {
        let vhca = self.vhca(fw, vf);
        End { fw, vf, vhca }
    }
}

/// Stop-copy in chunk mode, the kernel's way: QUERY(chunk) → buffer of
/// max(required, min(chunk_cap, total)); SAVE inc=0 (or inc=1 after pre-copy),
/// then SAVE inc=1 with the buffer grown to next_required until it is 0. Each
/// image is LOADed into `dst` straight from the buffer. Returns images moved.
pub fn stop_copy_chunks(
    rig: &mut Rig,
    src: End,
    dst: End,
    buf_src: &mut Buf,
    buf_dst: &mut Buf,
    pds: (u32, u32),
    first_inc: bool,
) -> u32 {
    let mut inc = first_inc;
    let (mut next, _) = rig.query_ok(src.fw, src.vhca, inc, true);
    let mut images = 0;
    loop {
        if u64::from(next) > buf_src.len {
            // Grow both mkeys over a bigger buffer (kernel: free + allocate).
            rig.drop_mkey(src.fw, *buf_src);
            rig.drop_mkey(dst.fw, *buf_dst);
            rig.free(*buf_src);
            *buf_src = rig.buffer(src.fw, pds.0, u64::from(next));
            *buf_dst = rig.share(dst.fw, pds.1, *buf_src);
        }
        let size = buf_src.len as u32;
        let (actual, n) = rig.save_ok(src.fw, src.vhca, inc, false, *buf_src, size);
        assert!(actual <= size);
        rig.load(dst.fw, dst.vhca, *buf_dst, actual).ok();
        images += 1;
        inc = true;
        if n == 0 {
            return images;
        }
        next = n;
    }
}
