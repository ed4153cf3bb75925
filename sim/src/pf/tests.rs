//! The register-level PF driven by hand-built entries: registers, delivery
//! checks, the lifecycle, pages through the IOMMU, and the queue faults.

use std::boxed::Box;
use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec;

use super::*;
use crate::firmware::FirmwareConfig;
use crate::iommu::DmaFault;
use crate::syndrome::Syndrome;

/// Host memory: 4 KiB pages by IOVA.
#[derive(Default)]
struct Mem(BTreeMap<u64, Vec<u8>>);

impl Mem {
    /// Runs `f` on each page-sized piece of `[iova, iova + len)` with the
    /// piece's offset in the range (pages made on first touch).
    fn pieces(&mut self, iova: u64, len: usize, mut f: impl FnMut(&mut [u8], usize)) {
        let mut done = 0usize;
        while done < len {
            let a = iova + done as u64;
            let off = (a & 0xfff) as usize;
            let n = (4096 - off).min(len - done);
            let page = self.0.entry(a & !0xfff).or_insert_with(|| vec![0; 4096]);
            f(&mut page[off..off + n], done);
            done += n;
        }
    }
    fn write(&mut self, iova: u64, bytes: &[u8]) {
        self.pieces(iova, bytes.len(), |p, at| {
            p.copy_from_slice(&bytes[at..at + p.len()])
        });
    }
    fn read(&mut self, iova: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        self.pieces(iova, len, |p, at| out[at..at + p.len()].copy_from_slice(p));
        out
    }
}

impl Dma for Mem {
    fn dma_write(
        &mut self,
        iova: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), DmaFault> {
        let mut buf = self.read(iova, len);
        fill(&mut buf);
        self.write(iova, &buf);
        Ok(())
    }
    fn dma_read(
        &mut self,
        iova: u64,
        len: usize,
        consume: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DmaFault> {
        consume(&self.read(iova, len));
        Ok(())
    }
}

const QUEUE: u64 = 0x10_0000;
const IN_AREA: u64 = 0x20_0000;
const OUT_AREA: u64 = 0x30_0000;
const PAGES: u64 = 0x40_0000;

struct Rig {
    pf: Box<Pf>,
    mem: Mem,
    token: u8,
    checksums: bool,
}

fn xor8(b: &[u8]) -> u8 {
    b.iter().fold(0, |a, x| a ^ x)
}

impl Rig {
    fn new() -> Self {
        let fw = Firmware::new(&FirmwareConfig::from_spec(
            &"sim:state=1M,vfs=2".parse().unwrap(),
        ))
        .unwrap();
        let mut pf = Box::new(Pf::new(fw, RegisterConfig::DEFAULT));
        for base in [QUEUE, IN_AREA, OUT_AREA, PAGES] {
            pf.firmware_mut().iommu_map(base, 0x10_0000).unwrap();
        }
        pf.write32(reg::CMDQ_ADDR_H, 0);
        pf.write32(reg::CMDQ_ADDR_L_SZ, QUEUE as u32);
        Self {
            pf,
            mem: Mem::default(),
            token: 0,
            checksums: false,
        }
    }

    /// Posts `input` on slot 1 with an output of `outlen`, runs it, and
    /// returns the entry's status_own and the output.
    fn run(&mut self, input: &[u8], outlen: usize) -> (u8, Vec<u8>) {
        self.run_with(input, outlen, |_, _| {})
    }

    fn run_with(
        &mut self,
        input: &[u8],
        outlen: usize,
        tamper: impl FnOnce(&mut [u8; 64], &mut Mem),
    ) -> (u8, Vec<u8>) {
        self.token = self.token.wrapping_add(1).max(1);
        let token = self.token;
        let chain = |mem: &mut Mem, area: u64, data: &[u8], sign: bool| {
            let n = data.len().div_ceil(512);
            for (i, chunk) in data.chunks(512).enumerate() {
                let mut b = [0u8; 576];
                b[..chunk.len()].copy_from_slice(chunk);
                let next = if i + 1 < n {
                    area + (i as u64 + 1) * 1024
                } else {
                    0
                };
                b[0x230..0x238].copy_from_slice(&next.to_be_bytes());
                b[0x238..0x23c].copy_from_slice(&(i as u32).to_be_bytes());
                b[0x23d] = token;
                if sign {
                    b[0x23e] = !xor8(&b[0x200..0x23f]);
                    b[0x23f] = !xor8(&b);
                }
                mem.write(area + i as u64 * 1024, &b);
            }
        };
        chain(&mut self.mem, IN_AREA, &input[16..], self.checksums);
        chain(
            &mut self.mem,
            OUT_AREA,
            &vec![0u8; outlen - 16],
            self.checksums,
        );
        let mut e = [0u8; 64];
        e[0] = 7;
        e[4..8].copy_from_slice(&(input.len() as u32).to_be_bytes());
        if input.len() > 16 {
            e[8..16].copy_from_slice(&IN_AREA.to_be_bytes());
        }
        e[16..32].copy_from_slice(&input[..16]);
        if outlen > 16 {
            e[0x30..0x38].copy_from_slice(&OUT_AREA.to_be_bytes());
        }
        e[0x38..0x3c].copy_from_slice(&(outlen as u32).to_be_bytes());
        e[0x3c] = token;
        e[0x3f] = 1;
        e[0x3d] = !xor8(&e);
        tamper(&mut e, &mut self.mem);
        self.mem.write(QUEUE + 64, &e);
        self.pf.write32(reg::CMD_DBELL, 1 << 1);
        assert_eq!(self.pf.take_doorbells(), 1 << 1);
        let peek = self.pf.peek(1, &mut self.mem);
        let mut scratch_in = vec![0u8; input.len().max(16)];
        let mut scratch_out = vec![0u8; outlen.max(16)];
        let done = self
            .pf
            .execute(1, &mut self.mem, &mut scratch_in, &mut scratch_out);
        let signal = done.is_some_and(|d| self.pf.hand_back(&d, &mut self.mem));
        let e = self.mem.read(QUEUE + 64, 64);
        if signal && e[0x3f] & 1 == 0 {
            assert_eq!(peek.map(|p| p.inlen), Some(input.len()));
            assert_eq!(xor8(&e), 0xff, "completed entries are signed");
        }
        let mut out = e[0x20..0x30].to_vec();
        for i in 0..(outlen - 16).div_ceil(512) {
            let b = self.mem.read(OUT_AREA + i as u64 * 1024, 576);
            if self.checksums {
                assert_eq!(xor8(&b), 0xff);
            }
            out.extend_from_slice(&b[..512]);
        }
        out.truncate(outlen);
        (e[0x3f], out)
    }

    fn cmd(&mut self, opcode: u16, op_mod: u16, dw2: u32, dw3: u32, outlen: usize) -> Vec<u8> {
        let mut input = vec![0u8; 16];
        input[0..2].copy_from_slice(&opcode.to_be_bytes());
        input[6..8].copy_from_slice(&op_mod.to_be_bytes());
        input[8..12].copy_from_slice(&dw2.to_be_bytes());
        input[12..16].copy_from_slice(&dw3.to_be_bytes());
        let (so, out) = self.run(&input, outlen);
        assert_eq!(so, 0, "delivered");
        out
    }

    fn ok(&mut self, opcode: u16, op_mod: u16, dw2: u32, dw3: u32, outlen: usize) -> Vec<u8> {
        let out = self.cmd(opcode, op_mod, dw2, dw3, outlen);
        assert_eq!(
            out[0],
            0,
            "{opcode:#x} failed: syndrome {:#x}",
            be32(&out, 4)
        );
        out
    }

    fn give(&mut self, function: u16, n: u32, first: u64) {
        let mut input = vec![0u8; 16 + 8 * n as usize];
        input[0..2].copy_from_slice(&0x108u16.to_be_bytes());
        input[7] = 1;
        input[10..12].copy_from_slice(&function.to_be_bytes());
        input[12..16].copy_from_slice(&n.to_be_bytes());
        for i in 0..n as usize {
            input[16 + 8 * i..24 + 8 * i].copy_from_slice(&(first + i as u64 * 4096).to_be_bytes());
        }
        let (so, out) = self.run(&input, 16);
        assert_eq!((so, out[0]), (0, 0), "GIVE: syndrome {:#x}", be32(&out, 4));
    }

    fn bring_up(&mut self) {
        self.ok(0x104, 0, 0, 0, 16);
        let issi = self.ok(0x10a, 0, 0, 0, 112);
        assert_eq!(be32(&issi, 108), 0b11);
        self.ok(0x10b, 0, 1, 0, 16);
        let boot = be32(&self.ok(0x107, 1, 0, 0, 16), 12);
        self.give(0, boot, PAGES);
        let init = be32(&self.ok(0x107, 2, 0, 0, 16), 12);
        self.give(0, init, PAGES + u64::from(boot) * 4096);
        self.ok(0x102, 0, 0, 0, 16);
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn syndrome(out: &[u8]) -> Option<Syndrome> {
    Syndrome::from_code(be32(out, 4))
}

#[test]
fn registers() {
    let fw = Firmware::new(&FirmwareConfig::from_spec(&"sim:state=1M".parse().unwrap())).unwrap();
    let mut pf = Box::new(Pf::new(fw, RegisterConfig::DEFAULT));
    assert_eq!(pf.read32(reg::CMDIF_REV_FW_SUB) >> 16, 5);
    assert_eq!(pf.read32(reg::FW_REV), 39 << 16 | 28);
    assert_eq!(pf.read32(reg::CMDQ_ADDR_L_SZ), 0x56);
    assert_eq!(pf.read32(reg::INITIALIZING), 1 << 31);
    assert_eq!(pf.read32(reg::INITIALIZING), 1 << 31);
    assert_eq!(pf.read32(reg::INITIALIZING), 0);
    let a = pf.read32(reg::HEALTH_COUNTER);
    assert_ne!(pf.read32(reg::HEALTH_COUNTER), a);
    pf.freeze_health_counter(true);
    let a = pf.read32(reg::HEALTH_COUNTER);
    assert_eq!(pf.read32(reg::HEALTH_COUNTER), a);
    pf.set_health_syndrome(7, 0x102);
    assert_eq!(pf.read32(reg::HEALTH_SYND), 0x0007_0102);
    // A doorbell before the queue has an address goes nowhere.
    pf.write32(reg::CMD_DBELL, 1);
    assert_eq!(pf.take_doorbells(), 0);
    assert_eq!(pf.counters().spurious_doorbells, 1);
    pf.write32(reg::CMDQ_ADDR_H, 0x12);
    pf.write32(reg::CMDQ_ADDR_L_SZ, 0x3456_7000);
    assert_eq!(pf.queue_address(), Some(0x12_3456_7000));
    assert_eq!(pf.read32(reg::CMDQ_ADDR_L_SZ), 0x3456_7056);
    // Fast teardown's nic_interface write keeps the address.
    pf.write32(reg::CMDQ_ADDR_L_SZ, 0x3456_7000 | 1 << 8);
    assert_eq!(pf.read32(reg::CMDQ_ADDR_L_SZ) >> 8 & 7, 1);
    pf.write32(reg::CMD_DBELL, 0x8000_0001);
    assert_eq!(pf.take_doorbells(), 0x8000_0001);
}

#[test]
fn bring_up_in_order_and_commands_gated() {
    let mut r = Rig::new();
    // Before ENABLE_HCA: nothing.
    let out = r.cmd(0x800, 0, 0, 0, 16);
    assert_eq!(syndrome(&out), Some(Syndrome::HcaNotEnabled));
    r.ok(0x104, 0, 0, 0, 16);
    // QUERY_HCA_CAP needs the boot pages, ALLOC_PD needs INIT_HCA.
    assert_eq!(
        syndrome(&r.cmd(0x100, 1, 0, 0, 4112)),
        Some(Syndrome::PagesMissing)
    );
    assert_eq!(
        syndrome(&r.cmd(0x10b, 0, 7, 0, 16)),
        Some(Syndrome::BadIssi)
    );
    r.ok(0x10b, 0, 1, 0, 16);
    assert_eq!(be32(&r.ok(0x107, 1, 0, 0, 16), 12), 8);
    // More pages than asked for, or pages the device cannot reach.
    let mut bad = r.cmd(0x108, 1, 0, 9, 16);
    assert_eq!(syndrome(&bad), Some(Syndrome::InputTooShort));
    r.checksums = false;
    bad = {
        let mut input = vec![0u8; 24];
        input[0..2].copy_from_slice(&0x108u16.to_be_bytes());
        input[7] = 1;
        input[15] = 1;
        input[16..24].copy_from_slice(&0x9000_0000u64.to_be_bytes());
        r.run(&input, 16).1
    };
    assert_eq!(syndrome(&bad), Some(Syndrome::PageNotMapped));
    r.give(0, 8, PAGES);
    assert_eq!(r.pf.fw_pages(), 8);
    assert_eq!(
        &r.mem.read(PAGES, 8),
        b"mlx5fwpg",
        "firmware writes its pages"
    );
    r.ok(0x100, 1, 0, 0, 4112);
    assert_eq!(
        syndrome(&r.cmd(0x800, 0, 0, 0, 16)),
        Some(Syndrome::HcaNotInitialized)
    );
    assert_eq!(
        syndrome(&r.cmd(0x102, 0, 0, 0, 16)),
        Some(Syndrome::PagesMissing)
    );
    r.give(0, 24, PAGES + 8 * 4096);
    r.ok(0x102, 0, 0, 0, 16);
    assert!(r.pf.is_initialized());
    let pd = r.ok(0x800, 0, 0, 0, 16);
    r.ok(0x801, 0, be32(&pd, 8), 0, 16);
    // Teardown: pages come back, then the PF can be disabled.
    assert_eq!(
        syndrome(&r.cmd(0x105, 0, 0, 0, 16)),
        Some(Syndrome::HcaInitialized)
    );
    assert_eq!(
        syndrome(&r.cmd(0x108, 2, 0, 32, 16 + 8 * 32)),
        Some(Syndrome::PagesInUse)
    );
    r.ok(0x103, 0, 0, 0, 16);
    // Pages to give back are not announced: the driver counts its own.
    assert_eq!(be32(&r.ok(0x107, 3, 0, 0, 16), 12), 0);
    assert_eq!(
        syndrome(&r.cmd(0x105, 0, 0, 0, 16)),
        Some(Syndrome::PagesNotReturned)
    );
    let taken = r.ok(0x108, 2, 0, 20, 16 + 8 * 20);
    assert_eq!(be32(&taken, 8), 20);
    let taken = r.ok(0x108, 2, 0, 20, 16 + 8 * 20);
    assert_eq!(be32(&taken, 8), 12);
    assert_eq!(r.pf.fw_pages(), 0);
    r.ok(0x105, 0, 0, 0, 16);
    assert!(!r.pf.is_enabled());
}

#[test]
fn vfs_run_once_enabled_and_given_pages() {
    let mut r = Rig::new();
    r.bring_up();
    let vhca = u32::from(r.pf.firmware().vhca_id(1).unwrap());
    // VF 1 (function 2) is detached until enabled and paged.
    assert_eq!(
        syndrome(&r.cmd(0x100, 1, 1 << 31 | 2, 0, 4112)),
        Some(Syndrome::VfDetached)
    );
    r.ok(0x104, 0, 2, 0, 16);
    assert_eq!(be32(&r.ok(0x107, 3, 2, 0, 16), 12), 4);
    assert_eq!(
        syndrome(&r.cmd(0x117, 0, vhca, 0, 64)),
        Some(Syndrome::VfDetached)
    );
    r.give(2, 4, PAGES + 0x8_0000);
    assert!(r.pf.vf_enabled(1));
    assert_eq!(be32(&r.ok(0x107, 3, 2, 0, 16), 12), 0);
    r.ok(0x117, 0, vhca, 0, 64);
    r.ok(0x105, 0, 2, 0, 16);
    assert_eq!(be32(&r.ok(0x107, 3, 2, 0, 16), 12), 0);
    assert_eq!(be32(&r.ok(0x108, 2, 2, 4, 48), 8), 4);
}

/// MANAGE_PAGES(TAKE) hands back up to the count asked (and the output
/// holds) of the pages held for that function, only those, and none while
/// withheld or once the function holds none.
#[test]
fn take_returns_up_to_the_count_of_the_functions_own_pages() {
    let mut r = Rig::new();
    r.bring_up();
    let vf = |n: u64| PAGES + 0x8_0000 + n * 0x1_0000;
    for f in [1u16, 2] {
        r.ok(0x104, 0, u32::from(f), 0, 16);
        r.give(f, 4, vf(u64::from(f)));
    }
    let take = |r: &mut Rig, f: u16, count: u32, room: usize| -> Vec<u64> {
        let out = r.ok(0x108, 2, u32::from(f), count, 16 + 8 * room);
        let n = be32(&out, 8) as usize;
        (0..n)
            .map(|i| u64::from_be_bytes(out[16 + 8 * i..24 + 8 * i].try_into().unwrap()))
            .collect()
    };
    assert_eq!(
        syndrome(&r.cmd(0x108, 2, 1, 4, 48)),
        Some(Syndrome::PagesInUse),
        "not while the function runs"
    );
    r.ok(0x103, 0, 0, 0, 16);
    r.pf.withhold_pages(true);
    assert!(take(&mut r, 1, 4, 4).is_empty(), "withheld");
    r.pf.withhold_pages(false);
    let mine = |a: &u64, f: u64| (vf(f)..vf(f) + 4 * 4096).contains(a);
    let first = take(&mut r, 1, 3, 4);
    assert_eq!(first.len(), 3, "no more than asked");
    assert!(first.iter().all(|a| mine(a, 1)), "{first:x?}");
    let rest = take(&mut r, 1, 8, 1);
    assert_eq!(rest.len(), 1, "no more than the output holds");
    assert!(rest.iter().all(|a| mine(a, 1)) && !first.contains(&rest[0]));
    assert!(take(&mut r, 1, 4, 4).is_empty(), "function 1 holds none");
    let two = take(&mut r, 2, 4, 4);
    assert_eq!(two.len(), 4);
    assert!(two.iter().all(|a| mine(a, 2)), "{two:x?}");
    assert_eq!(r.pf.fw_pages(), 32, "the PF's boot and init pages");
}

#[test]
fn delivery_checks() {
    let mut r = Rig::new();
    r.bring_up();
    let mut pd_in = vec![0u8; 16];
    pd_in[0] = 8;
    let status = |so: u8| so >> 1;
    // Bad type, bad token in an input block, unaligned pointers, a chain
    // cut short, lengths beyond the model's scratch.
    let (so, _) = r.run_with(&pd_in, 16, |e, _| {
        e[0] = 3;
    });
    assert_eq!(status(so), 0x10);
    let long = {
        let mut v = vec![0u8; 16 + 600];
        v[0] = 8;
        v
    };
    let (so, _) = r.run_with(&long, 16, |_, mem| {
        mem.write(IN_AREA + 1024 + 0x23d, &[0xee])
    });
    assert_eq!(status(so), 0x2);
    let (so, _) = r.run_with(&long, 16, |_, mem| mem.write(IN_AREA + 1024 + 0x23b, &[5]));
    assert_eq!(status(so), 0x3);
    let (so, _) = r.run_with(&long, 16, |e, _| e[15] = 0x40);
    assert_eq!(status(so), 0x5);
    let (so, _) = r.run_with(&pd_in, 600, |e, _| e[0x37] = 0x40);
    assert_eq!(status(so), 0x4);
    let (so, _) = r.run_with(&long, 16, |_, mem| mem.write(IN_AREA + 0x230, &[0; 8]));
    assert_eq!(status(so), 0x7);
    let (so, _) = r.run_with(&pd_in, 600, |_, mem| mem.write(OUT_AREA + 0x230, &[0; 8]));
    assert_eq!(status(so), 0x8);
    // An entry the device cannot reach is never completed.
    r.pf.firmware_mut().iommu_unmap(IN_AREA, 0x10_0000).unwrap();
    let (so, _) = r.run(&long, 16);
    assert_eq!(status(so), 0x6);
    assert!(r.pf.counters().dma_faults > 0);
    assert!(r.pf.counters().delivery_errors >= 7);
}

#[test]
fn checksums_once_enabled() {
    let mut r = Rig::new();
    r.ok(0x104, 0, 0, 0, 16);
    r.give(0, 8, PAGES);
    let mut cap = vec![0u8; 4112];
    cap[0..2].copy_from_slice(&0x109u16.to_be_bytes());
    cap[16 + 66] = 0xc0; // cmdif_checksum = 3
    let (so, out) = r.run(&cap, 16);
    assert_eq!((so, out[0]), (0, 0));
    assert!(r.pf.checksums());
    r.checksums = true;
    r.give(0, 24, PAGES + 8 * 4096);
    // A block with a bad signature, then an entry with one.
    let long = vec![0u8; 700];
    let (so, _) = r.run_with(&long, 16, |_, mem| mem.write(IN_AREA + 3, &[1]));
    assert_eq!(so >> 1, 0x1);
    let (so, _) = r.run_with(&long, 16, |e, _| e[0x3d] ^= 1);
    assert_eq!(so >> 1, 0x1);
    // QUERY_HCA_CAP's 8 output blocks come back signed (checked in run).
    r.ok(0x100, 1, 0, 0, 4112);
}

#[test]
fn queue_faults() {
    let mut r = Rig::new();
    r.bring_up();
    let mut pd_in = vec![0u8; 16];
    pd_in[0] = 8;
    assert!(r.pf.arm_fault(Some(0x800), QueueFault::Stuck));
    let (so, _) = r.run(&pd_in, 16);
    assert_eq!(so & 1, 1, "never handed back");
    assert!(r.pf.arm_fault(None, QueueFault::BadOwnership));
    let (so, _) = r.run(&pd_in, 16);
    assert_eq!(so, 1, "handed back owned");
    assert!(r.pf.arm_fault(None, QueueFault::WrongToken));
    let token = r.token.wrapping_add(1);
    let (_, _) = r.run(&pd_in, 16);
    assert_eq!(r.mem.read(QUEUE + 64 + 0x3c, 1)[0], token ^ 0x80);
    assert!(r.pf.arm_fault(None, QueueFault::Delivery(0x5c)));
    assert_eq!(r.run(&pd_in, 16).0, 0x5c << 1);
    assert!(r.pf.arm_fault(None, QueueFault::ShortOutputChain));
    let _ = r.run_with(
        &{
            let mut v = vec![0u8; 16];
            v[0..2].copy_from_slice(&0x100u16.to_be_bytes());
            v[7] = 1;
            v
        },
        4112,
        |_, _| {},
    );
    assert_eq!(r.mem.read(OUT_AREA + 0x230, 8), vec![0; 8]);
    // A health syndrome stops the firmware.
    r.pf.set_health_syndrome(1, 0);
    assert_eq!(r.run(&pd_in, 16).0 & 1, 1);
    for _ in 0..MAX_QUEUE_FAULTS {
        assert!(r.pf.arm_fault(None, QueueFault::Stuck));
    }
    assert!(!r.pf.arm_fault(None, QueueFault::Stuck));
}

#[test]
fn a_reset_tears_the_function_down_and_keeps_vf_state() {
    let mut r = Rig::new();
    r.bring_up();
    r.ok(0x104, 0, 1, 0, 16);
    r.give(1, 4, PAGES + 0x8_0000);
    r.ok(0x800, 0, 0, 0, 16);
    r.pf.firmware_mut().tick(0, 3);
    let digest = r.pf.firmware().digest(0);
    let commands = r.pf.counters().commands;
    assert!(r.pf.is_initialized() && r.pf.vf_enabled(0) && r.pf.fw_pages() > 0);
    r.pf.reset();
    assert!(!r.pf.is_enabled() && !r.pf.is_initialized() && !r.pf.vf_enabled(0));
    assert_eq!(r.pf.fw_pages(), 0);
    assert_eq!(r.pf.queue_address(), None);
    let a = r.pf.firmware().accounting();
    assert_eq!(
        (a.pds, a.mkeys),
        (0, 0),
        "PDs and mkeys went with the function"
    );
    assert_eq!(
        a.iommu_mappings, 4,
        "the host's IOMMU is not the device's to reset"
    );
    assert_eq!(r.pf.firmware().digest(0), digest, "VFs keep their state");
    assert_eq!(r.pf.counters().commands, commands);
    // Up again from scratch: the queue must be programmed first.
    r.pf.write32(reg::CMDQ_ADDR_L_SZ, QUEUE as u32);
    r.bring_up();
    assert_eq!(
        syndrome(&r.cmd(
            0x117,
            0,
            u32::from(r.pf.firmware().vhca_id(0).unwrap()),
            0,
            64
        )),
        Some(Syndrome::VfDetached),
        "VF 0 is disabled until enabled again"
    );
}

#[test]
fn configured_in_place_as_new_builds_it() {
    let spec = "sim:state=1M,vfs=2,seed=9".parse().unwrap();
    let config = FirmwareConfig::from_spec(&spec);
    let mut pf = Box::new(Pf::EMPTY);
    assert_eq!(pf.firmware().vf_count(), 0);
    pf.configure(&config, RegisterConfig::DEFAULT).unwrap();
    let fresh = Pf::new(Firmware::new(&config).unwrap(), RegisterConfig::DEFAULT);
    assert_eq!(pf.firmware().vf_count(), 2);
    assert_eq!(pf.firmware().digest(1), fresh.firmware().digest(1));
    assert!(!pf.is_enabled() && !pf.vf_enabled(0));
    assert_eq!(pf.read32(reg::INITIALIZING), 1 << 31, "initializing again");
}
