//! `bench --only cmdq`: commands per second through a PF's command queue,
//! in this process over the register-level model (`sim:…,transport=cmdq`),
//! or through VFIO over a PF `--cmdq-device vfio-pf:…` names (the kernel
//! rig's `mlx5vf_pfsim` PFs), against the same commands as direct calls
//! into a firmware model in this process (the queue's own cost is the
//! difference), plus bring-up and teardown.
//!
//! Three shapes: a 16-byte command with a 16-byte output (ALLOC_PD and
//! DEALLOC_PD in turn: no mailbox), QUERY_HCA_CAP (eight output blocks),
//! and CREATE_MKEY of 2048 pages (a 16 KiB MTT: 33 input blocks) with its
//! DESTROY_MKEY.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use mlx5vf_core::hal::{DmaDirection, Hal};
use mlx5vf_core::ifc::mkey::{create_mkey_in_len, encode_create_mkey_mtt};
use mlx5vf_core::ifc::pd::Pd;
use mlx5vf_sim::firmware::{Firmware, FirmwareConfig};
use mlx5vf_sim::iommu::NoDma;

use super::{BenchArgs, Summary, Value, emit, result_of};
use crate::backend::DriverOptions;
use crate::pf::CmdqDevice;
use crate::pf::hal::CmdqHal;
use crate::pf::transport::Transport;

/// How long each shape runs.
const RUN: Duration = Duration::from_millis(700);
/// The default device, and the firmware of the direct calls.
pub(super) const SPEC: &str = "sim:state=1M,transport=cmdq";
/// Pages of the CREATE_MKEY shape.
const MKEY_PAGES: u32 = 2048;

fn header(opcode: u16) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..2].copy_from_slice(&opcode.to_be_bytes());
    b
}

/// Runs `one` (which issues `n` commands) until [`RUN`] passes; returns
/// commands per second.
fn rate(n: u64, mut one: impl FnMut() -> io::Result<()>) -> io::Result<f64> {
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < RUN {
        one()?;
        done += n;
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

fn failed(out: &[u8]) -> io::Result<()> {
    match out.first() {
        Some(0) => Ok(()),
        _ => Err(io::Error::other(format!(
            "command failed: {:02x?}",
            out.get(..8)
        ))),
    }
}

/// `mlx5vf bench --only cmdq`, on `--cmdq-device`.
///
/// # Errors
/// The device did not open or a command failed.
pub(super) fn run(args: &BenchArgs, out: &mut dyn Write) -> io::Result<()> {
    let spec = args.cmdq_device.as_str();
    let opts = DriverOptions::default();
    let start = Instant::now();
    if spec.starts_with("vfio-pf:") {
        let parsed = crate::vfio_pf::PfSpec::parse(spec).map_err(io::Error::other)?;
        let dev = crate::vfio_pf::open(spec, &parsed, &opts)?;
        measure(args, dev, start.elapsed(), out)
    } else {
        let parsed = spec
            .parse()
            .map_err(|e| io::Error::other(format!("{spec}: {e}")))?;
        let dev = crate::pf::sim::open(spec, &parsed, &opts)?;
        measure(args, dev, start.elapsed(), out)
    }
}

/// The shapes on `dev`, opened in `bring_up`.
fn measure<T: Transport>(
    args: &BenchArgs,
    dev: CmdqDevice<T>,
    bring_up: Duration,
    out: &mut dyn Write,
) -> io::Result<()> {
    use crate::backend::MigrationDevice;
    let device = dev.describe();
    let parsed = SPEC.parse().map_err(|e| io::Error::other(format!("{e}")))?;
    let port = std::sync::Arc::clone(dev.port());
    let mut hal = CmdqHal::new(std::sync::Arc::clone(&port), true);
    let exec = |hal: &mut CmdqHal<_>, input: &[u8], output: &mut [u8]| -> io::Result<()> {
        hal.exec(input, output).map_err(io::Error::from)?;
        failed(output)
    };

    // 16 bytes in and out: ALLOC_PD, DEALLOC_PD.
    let mut pd_out = [0u8; 16];
    let small = rate(2, || {
        exec(&mut hal, &header(0x800), &mut pd_out)?;
        let mut dealloc = header(0x801);
        dealloc[8..12].copy_from_slice(&pd_out[8..12]);
        exec(&mut hal, &dealloc, &mut [0u8; 16])
    })?;

    // QUERY_HCA_CAP: 4112 bytes out.
    let mut query = header(0x100);
    query[7] = 1;
    let mut cap = vec![0u8; 4112];
    let caps = rate(1, || exec(&mut hal, &query, &mut cap))?;

    // CREATE_MKEY of 2048 pages, DESTROY_MKEY.
    exec(&mut hal, &header(0x800), &mut pd_out)?;
    let pd = Pd(u32::from_be_bytes(
        pd_out[8..12].try_into().unwrap_or_default(),
    ));
    let buf = hal
        .alloc_buffer(MKEY_PAGES, DmaDirection::FromDevice)
        .map_err(io::Error::from)?;
    let mkey = hal.map_buffers(pd, &[buf]).map_err(io::Error::from)?;
    hal.unmap_buffers(mkey, &[]).map_err(io::Error::from)?;
    let pages: Vec<u64> = (0..u64::from(MKEY_PAGES))
        .map(|p| buf.0 + p * 4096)
        .collect();
    let mut create = vec![0u8; create_mkey_in_len(MKEY_PAGES)];
    encode_create_mkey_mtt(&mut create, pd, pages.iter().copied())
        .map_err(|e| io::Error::other(e.to_string()))?;
    let mut key = [0u8; 16];
    let mkeys = rate(2, || {
        exec(&mut hal, &create, &mut key)?;
        let mut destroy = header(0x202);
        destroy[9..12].copy_from_slice(&key[9..12]);
        exec(&mut hal, &destroy, &mut [0u8; 16])
    })?;
    hal.free_buffer(buf);
    let mut dealloc = header(0x801);
    dealloc[8..12].copy_from_slice(&pd.0.to_be_bytes());
    exec(&mut hal, &dealloc, &mut [0u8; 16])?;
    let counters = port.counters();
    drop(hal);
    drop(port);
    let start = Instant::now();
    dev.close()?;
    let teardown = start.elapsed();

    // The same small commands as direct calls into the firmware model.
    let mut fw = Box::new(
        Firmware::new(&FirmwareConfig::from_spec(&parsed))
            .map_err(|e| io::Error::other(e.to_string()))?,
    );
    let direct = rate(2, || {
        let mut o = [0u8; 16];
        fw.exec(&header(0x800), &mut o, &mut NoDma)
            .map_err(|e| io::Error::other(e.to_string()))?;
        failed(&o)?;
        let mut dealloc = header(0x801);
        dealloc[8..12].copy_from_slice(&o[8..12]);
        fw.exec(&dealloc, &mut o, &mut NoDma)
            .map_err(|e| io::Error::other(e.to_string()))?;
        failed(&o)
    })?;

    let mut s: Summary = result_of("cmdq");
    s.add("device", Value::Text(device))
        .add("commands_per_sec_16b", Value::Float(small))
        .add("commands_per_sec_query_hca_cap", Value::Float(caps))
        .add(
            "commands_per_sec_create_mkey_2048_pages",
            Value::Float(mkeys),
        )
        .add("direct_calls_per_sec_16b", Value::Float(direct))
        .add(
            "queue_ns_per_command_16b",
            Value::Float(1e9 / small - 1e9 / direct),
        )
        .add("bring_up_seconds", Value::Float(bring_up.as_secs_f64()))
        .add("teardown_seconds", Value::Float(teardown.as_secs_f64()))
        .add("commands_completed", Value::Int(counters.completed));
    emit(args.json, &s, out)
}
