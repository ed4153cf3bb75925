//! How fast the sim produces SAVE content and verifies LOAD content,
//! against single-thread `memcpy` (`copy_from_slice`) of the same bytes on
//! this machine. Prints figures; no pass/fail.
//!
//! Run: `cargo bench -p mlx5vf-sim --bench generate`
//! (env `SIM_BENCH_STATE`, a size like `4G`, changes the state size).

use std::hint::black_box;
use std::time::{Duration, Instant};

use mlx5vf_sim::objects::{content_key, content_matches, fill_content};
use mlx5vf_sim::spec::parse_size;
use mlx5vf_sim::{Dma, DmaFault, Firmware, FirmwareConfig, NoDma, SimSpec};

/// The host buffer SAVE writes into and LOAD reads from (16 MiB, twice the
/// Linux chunk size, so the largest default objects fit).
const BUF: usize = 16 << 20;
const IOVA: u64 = 0x1_0000_0000;

struct Host(Vec<u8>);

impl Dma for Host {
    fn dma_write(
        &mut self,
        iova: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), DmaFault> {
        let off = usize::try_from(iova - IOVA).map_err(|_| DmaFault)?;
        fill(self.0.get_mut(off..off + len).ok_or(DmaFault)?);
        Ok(())
    }
    fn dma_read(
        &mut self,
        iova: u64,
        len: usize,
        consume: &mut dyn FnMut(&[u8]),
    ) -> Result<(), DmaFault> {
        let off = usize::try_from(iova - IOVA).map_err(|_| DmaFault)?;
        consume(self.0.get(off..off + len).ok_or(DmaFault)?);
        Ok(())
    }
}

fn cmd(opcode: u16, op_mod: u16, len: usize) -> Vec<u8> {
    let mut c = vec![0u8; len];
    c[0..2].copy_from_slice(&opcode.to_be_bytes());
    c[6..8].copy_from_slice(&op_mod.to_be_bytes());
    c
}

fn exec(fw: &mut Firmware, input: &[u8], out_len: usize, dma: &mut dyn Dma) -> Vec<u8> {
    let mut out = vec![0u8; out_len];
    fw.exec(input, &mut out, dma).unwrap();
    assert_eq!(
        out[0],
        0,
        "status {:#x} syndrome {:#x}",
        out[0],
        u32::from_be_bytes(out[4..8].try_into().unwrap())
    );
    out
}

/// PD + an MTT mkey over the whole buffer; returns the key.
fn setup(fw: &mut Firmware) -> u32 {
    fw.iommu_map(IOVA, BUF as u64).unwrap();
    let pd = exec(fw, &cmd(0x800, 0, 16), 16, &mut NoDma);
    let pages = BUF / 4096;
    let mut c = cmd(0x200, 0, 272 + 8 * pages);
    c[18] = 0x3d;
    c[20..23].copy_from_slice(&[0xff; 3]);
    c[29..32].copy_from_slice(&pd[9..12]);
    c[40..48].copy_from_slice(&(BUF as u64).to_be_bytes());
    c[68..72].copy_from_slice(&((pages / 2) as u32).to_be_bytes());
    c[75] = 12;
    c[96..100].copy_from_slice(&((pages / 2) as u32).to_be_bytes());
    for p in 0..pages {
        c[272 + 8 * p..280 + 8 * p].copy_from_slice(&(IOVA + 4096 * p as u64).to_be_bytes());
    }
    let out = exec(fw, &c, 16, &mut NoDma);
    u32::from_be_bytes([out[9], out[10], out[11], 0])
}

fn vhca_cmd(opcode: u16, op_mod: u16, vhca: u16) -> Vec<u8> {
    let mut c = cmd(opcode, op_mod, 16);
    c[10..12].copy_from_slice(&vhca.to_be_bytes());
    c
}

fn stop(fw: &mut Firmware, vhca: u16) {
    exec(fw, &vhca_cmd(0x115, 0, vhca), 16, &mut NoDma);
    exec(fw, &vhca_cmd(0x115, 1, vhca), 16, &mut NoDma);
}

fn gbps(bytes: u64, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64() / 1e9
}

fn main() {
    let state = std::env::var("SIM_BENCH_STATE")
        .ok()
        .and_then(|s| parse_size(&s))
        .unwrap_or(4 << 30);
    let spec = SimSpec::parse(&format!("sim:state={state},seed=9")).unwrap();
    let mut src = Box::new(Firmware::new(&FirmwareConfig::from_spec(&spec)).unwrap());
    let mut dst = Box::new(Firmware::new(&FirmwareConfig::from_spec(&SimSpec::DEFAULT)).unwrap());
    let (src_key, dst_key) = (setup(&mut src), setup(&mut dst));
    let (src_vhca, dst_vhca) = (src.vhca_id(0).unwrap(), dst.vhca_id(0).unwrap());
    stop(&mut src, src_vhca);
    stop(&mut dst, dst_vhca);
    let mut host = Host(vec![0u8; BUF]);

    // SAVE → LOAD, chunk by chunk, through the same host buffer.
    let (mut save_t, mut load_t, mut bytes, mut images) =
        (Duration::ZERO, Duration::ZERO, 0u64, 0u32);
    let mut inc = false;
    loop {
        let mut c = vhca_cmd(0x118, 0, src_vhca);
        c.resize(32, 0);
        if inc {
            c[8] = 0x80;
        }
        c[24..28].copy_from_slice(&src_key.to_be_bytes());
        c[28..32].copy_from_slice(&(BUF as u32).to_be_bytes());
        let t = Instant::now();
        let out = exec(&mut src, &c, 16, &mut host);
        save_t += t.elapsed();
        let actual = u32::from_be_bytes(out[8..12].try_into().unwrap());
        let next = u32::from_be_bytes(out[12..16].try_into().unwrap());
        let mut l = vhca_cmd(0x119, 0, dst_vhca);
        l.resize(32, 0);
        l[24..28].copy_from_slice(&dst_key.to_be_bytes());
        l[28..32].copy_from_slice(&actual.to_be_bytes());
        let t = Instant::now();
        exec(&mut dst, &l, 16, &mut host);
        load_t += t.elapsed();
        bytes += u64::from(actual);
        images += 1;
        inc = true;
        if next == 0 {
            break;
        }
        assert!(next as usize <= BUF, "object larger than the bench buffer");
    }
    assert_eq!(src.digest(0), dst.digest(0));

    // memcpy of the same number of bytes, buffer to buffer, single thread.
    let from = vec![0x5au8; BUF];
    let mut to = vec![0u8; BUF];
    let t = Instant::now();
    let mut copied = 0u64;
    while copied < bytes {
        let n = BUF.min((bytes - copied) as usize);
        to[..n].copy_from_slice(&from[..n]);
        black_box(&mut to);
        copied += n as u64;
    }
    let memcpy_t = t.elapsed();

    // The bare generator on the same buffer (no command, no DMA walk).
    let key = content_key(9, 1, 2);
    let rounds = (bytes / BUF as u64).max(1);
    let t = Instant::now();
    for r in 0..rounds {
        fill_content(key ^ r, 0, black_box(&mut host.0));
    }
    let gen_t = t.elapsed();
    let t = Instant::now();
    let mut ok = true;
    for _ in 0..rounds {
        ok &= content_matches(key ^ (rounds - 1), 0, black_box(&host.0));
    }
    let check_t = t.elapsed();
    assert!(ok);

    let mc = gbps(bytes, memcpy_t);
    println!(
        "sim generate bench: state={} ({images} images of <= {} MiB), one thread",
        mlx5vf_sim::spec::Size(spec.state),
        BUF >> 20
    );
    println!("  memcpy (copy_from_slice)   {:6.2} GB/s", mc);
    for (name, rate) in [
        ("SAVE (generate via DMA)", gbps(bytes, save_t)),
        ("LOAD (verify via DMA)", gbps(bytes, load_t)),
        ("fill_content (bare)", gbps(rounds * BUF as u64, gen_t)),
        ("content_matches (bare)", gbps(rounds * BUF as u64, check_t)),
    ] {
        println!("  {name:<26} {rate:6.2} GB/s  = {:4.2} x memcpy", rate / mc);
    }
}
