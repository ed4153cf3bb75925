//! The `Hal` over a PF's command queue, against the register-level model
//! (`sim:…,transport=cmdq`): migrations with equal digests and nothing
//! live afterwards, mailbox chains beyond 4 KiB, and each way the queue or
//! the firmware can fail — bad ownership, a wrong token, a garbage delivery
//! status, a cut output chain, a stuck firmware (timeout), a health
//! syndrome, a hung health counter — each a specific error, each followed
//! by a clean teardown.
#![cfg(all(feature = "cli", feature = "sim"))]

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mlx5vf::backend::{DriverOptions, MigrationDevice, errno_of};
use mlx5vf::pf::memory::DmaSpace;
use mlx5vf::pf::port::{Port, PortConfig};
use mlx5vf::pf::sim::SimTransport;
use mlx5vf::pf::{CmdqDevice, PfError};
use mlx5vf_core::cmdq::{Checksums, CmdqError, DeliveryStatus, SlotClass, iseg};
use mlx5vf_core::errno::Errno;
use mlx5vf_core::hal::{DmaDirection, Hal};
use mlx5vf_core::ifc::pd::Pd;
use mlx5vf_core::vfio::MigState;
use mlx5vf_sim::pf::{QueueFault, RegisterConfig};
use mlx5vf_sim::spec::SimSpec;

type Dev = CmdqDevice<SimTransport>;

fn transport(spec: &str) -> (Arc<SimTransport>, Arc<DmaSpace>) {
    let parsed: SimSpec = spec.parse().unwrap();
    let space = Arc::new(DmaSpace::default());
    let t = SimTransport::new(spec, &parsed, RegisterConfig::DEFAULT, &space).unwrap();
    (Arc::new(t), space)
}

fn quick() -> PortConfig {
    PortConfig {
        command_timeout: Some(Duration::from_millis(300)),
        health_interval: Duration::from_millis(20),
        health_stall: Duration::from_millis(200),
        ..PortConfig::default()
    }
}

fn open_cfg(
    spec: &str,
    cfg: PortConfig,
    arm: impl FnOnce(&SimTransport),
) -> std::io::Result<(Dev, Arc<SimTransport>)> {
    let (t, space) = transport(spec);
    arm(&t);
    let dev = CmdqDevice::open(
        spec,
        Arc::clone(&t),
        space,
        0,
        &DriverOptions::default(),
        cfg,
    )?;
    Ok((dev, t))
}

fn open(spec: &str) -> (Dev, Arc<SimTransport>) {
    open_cfg(spec, quick(), |_| {}).unwrap()
}

/// As [`open`], keeping the DMA space (to count what stays mapped).
fn open_with_space(spec: &str) -> (Dev, Arc<SimTransport>, Arc<DmaSpace>) {
    let (t, space) = transport(spec);
    let dev = CmdqDevice::open(
        spec,
        Arc::clone(&t),
        Arc::clone(&space),
        0,
        &DriverOptions::default(),
        quick(),
    )
    .unwrap();
    (dev, t, space)
}

/// Nothing live in the model: no PD, mkey, IOMMU mapping or firmware page,
/// and the PF disabled again.
fn assert_nothing_live(t: &SimTransport) {
    t.with_pf(|pf| {
        let a = pf.firmware().accounting();
        assert!(a.is_zero(), "{a:?}");
        assert_eq!(pf.fw_pages(), 0);
        assert!(!pf.is_enabled() && !pf.is_initialized());
    });
}

fn save_all(d: &mut dyn MigrationDevice) -> Vec<u8> {
    let mut f = d.set_state(MigState::StopCopy).unwrap().unwrap();
    let mut s = vec![];
    f.read_to_end(&mut s).unwrap();
    drop(f);
    d.set_state(MigState::Stop).unwrap();
    s
}

fn load_all(d: &mut dyn MigrationDevice, stream: &[u8]) {
    let mut f = d.set_state(MigState::Resuming).unwrap().unwrap();
    for piece in stream.chunks(1 << 20) {
        f.write_all(piece).unwrap();
    }
    drop(f);
    d.set_state(MigState::Running).unwrap();
}

#[test]
fn a_migration_over_two_command_queues_keeps_the_digest_and_leaves_nothing() {
    let (mut src, ts) = open("sim:state=24M,seed=5,transport=cmdq");
    let (mut dst, td) = open("sim:state=1M,seed=9,transport=cmdq");
    assert_eq!(src.fw_pages(), 8 + 24 + 4, "boot, init and the VF's pages");
    assert_ne!(src.digest(), dst.digest());
    let stream = save_all(&mut src);
    load_all(&mut dst, &stream);
    assert_eq!(src.digest(), dst.digest());
    assert!(src.digest().is_some());
    // The driver freed its PDs and mkeys itself (teardown would too).
    for t in [&ts, &td] {
        let a = t.with_pf(|pf| pf.firmware().accounting());
        assert_eq!((a.pds, a.mkeys), (0, 0), "{a:?}");
    }
    let counters = src.port().counters();
    assert!(
        counters.completed > 20 && counters.failed == 0,
        "{counters:?}"
    );
    src.close().unwrap();
    dst.close().unwrap();
    assert_nothing_live(&ts);
    assert_nothing_live(&td);
}

#[test]
fn checksums_on_sign_and_check_every_entry_and_block() {
    let cfg = PortConfig {
        checksums: Checksums::On,
        ..quick()
    };
    let (mut src, ts) = open_cfg("sim:state=8M,seed=3,transport=cmdq", cfg, |_| {}).unwrap();
    assert!(
        ts.with_pf(|pf| pf.checksums()),
        "SET_HCA_CAP turned them on"
    );
    let (mut dst, _) = open_cfg("sim:state=1M,transport=cmdq", cfg, |_| {}).unwrap();
    let stream = save_all(&mut src);
    load_all(&mut dst, &stream);
    assert_eq!(src.digest(), dst.digest());
    src.close().unwrap();
    assert_nothing_live(&ts);
}

/// An mkey over 4096 pages: a 32 KiB MTT, 65 input blocks.
#[test]
fn create_mkey_with_a_large_mtt_goes_through_a_long_chain() {
    let (dev, t) = open("sim:state=1M,transport=cmdq");
    let port = Arc::clone(dev.port());
    let mut hal = mlx5vf::pf::hal::CmdqHal::new(Arc::clone(&port), true);
    let mut out = [0u8; 16];
    let mut alloc_pd = [0u8; 16];
    alloc_pd[0..2].copy_from_slice(&0x800u16.to_be_bytes());
    hal.exec(&alloc_pd, &mut out).unwrap();
    assert_eq!(out[0], 0);
    let pd = Pd(u32::from_be_bytes(out[8..12].try_into().unwrap()));
    let buf = hal.alloc_buffer(4096, DmaDirection::FromDevice).unwrap();
    let mkey = hal.map_buffers(pd, &[buf]).unwrap();
    let a = t.with_pf(|pf| pf.firmware().accounting());
    assert_eq!((a.mkeys, a.mkey_bytes), (1, 4096 * 4096));
    hal.unmap_buffers(mkey, &[buf]).unwrap();
    hal.free_buffer(buf);
    let mut dealloc = [0u8; 16];
    dealloc[0..2].copy_from_slice(&0x801u16.to_be_bytes());
    dealloc[8..12].copy_from_slice(&pd.0.to_be_bytes());
    hal.exec(&dealloc, &mut out).unwrap();
    assert_eq!(out[0], 0);
    drop(hal);
    dev.close().unwrap();
    assert_nothing_live(&t);
}

/// ALLOC_PD through the port, for the fault tests.
fn alloc_pd<T: mlx5vf::pf::transport::Transport>(dev: &CmdqDevice<T>) -> Result<[u8; 16], PfError> {
    let mut input = [0u8; 16];
    input[0..2].copy_from_slice(&0x800u16.to_be_bytes());
    let mut out = [0u8; 16];
    dev.port()
        .exec(SlotClass::Command, &input, &mut out)
        .map(|()| out)
}

fn queue_error(r: Result<[u8; 16], PfError>) -> CmdqError {
    match r {
        Err(PfError::Queue {
            opcode: 0x800,
            error,
        }) => error,
        other => panic!("expected a queue error, got {other:?}"),
    }
}

#[test]
fn each_bad_completion_is_its_own_error_and_the_queue_goes_on() {
    let (dev, t) = open("sim:state=1M,transport=cmdq");
    let arm = |f| assert!(t.with_pf(|pf| pf.arm_fault(Some(0x800), f)));
    arm(QueueFault::BadOwnership);
    assert!(matches!(
        queue_error(alloc_pd(&dev)),
        CmdqError::BadOwnership { .. }
    ));
    arm(QueueFault::WrongToken);
    assert!(matches!(
        queue_error(alloc_pd(&dev)),
        CmdqError::WrongToken { .. }
    ));
    arm(QueueFault::Delivery(0x5c));
    let garbage = queue_error(alloc_pd(&dev));
    assert_eq!(garbage, CmdqError::UnknownDeliveryStatus(0x5c));
    assert_eq!(garbage.errno(), Errno::EINVAL, "Linux's default: -EINVAL");
    arm(QueueFault::Delivery(0x2));
    assert_eq!(
        queue_error(alloc_pd(&dev)),
        CmdqError::Delivery(DeliveryStatus::TokenError)
    );
    // The queue still works: the bad-ownership slot stays stuck, the rest
    // serve commands (the PD is freed by DEALLOC below).
    let out = alloc_pd(&dev).unwrap();
    assert_eq!(out[0], 0);
    let mut dealloc = [0u8; 16];
    dealloc[0..2].copy_from_slice(&0x801u16.to_be_bytes());
    dealloc[8..12].copy_from_slice(&out[8..12]);
    let mut o = [0u8; 16];
    dev.port()
        .exec(SlotClass::Command, &dealloc, &mut o)
        .unwrap();
    // A cut output chain (QUERY_HCA_CAP's 8 blocks) is a short chain.
    t.with_pf(|pf| pf.arm_fault(Some(0x100), QueueFault::ShortOutputChain));
    let mut q = [0u8; 16];
    q[0..2].copy_from_slice(&0x100u16.to_be_bytes());
    q[7] = 1;
    let mut cap = vec![0u8; 4112];
    match dev.port().exec(SlotClass::Command, &q, &mut cap) {
        Err(PfError::Queue {
            error:
                CmdqError::ShortChain {
                    blocks: 1,
                    needed: 8,
                },
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    dev.close().unwrap();
    assert_nothing_live(&t);
}

/// A slot lost to bad ownership serves again once firmware hands its
/// entry back at last: the queue does not run out of slots for good.
#[test]
fn a_stuck_slot_serves_again_once_firmware_hands_it_back() {
    let (dev, t, space) = open_with_space("sim:state=1M,transport=cmdq");
    // Every command slot (all but the last, MANAGE_PAGES') gets stuck.
    let mut slots = Vec::new();
    for _ in 0..31 {
        assert!(t.with_pf(|pf| pf.arm_fault(Some(0x800), QueueFault::BadOwnership)));
        match queue_error(alloc_pd(&dev)) {
            CmdqError::BadOwnership { slot } => slots.push(slot),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(slots, (0..31).collect::<Vec<u8>>());
    // Still owned by hardware: nothing to reclaim.
    assert_eq!(queue_error(alloc_pd(&dev)), CmdqError::NoFreeSlot);
    // Firmware hands the entries back at last (clears their owner bits).
    let queue = t.with_pf(|pf| pf.queue_address()).unwrap();
    for slot in &slots {
        let (r, off) = space.find(queue + u64::from(*slot) * 64 + 0x3f, 1).unwrap();
        r.with_bytes_mut(off, 1, |b| b[0] &= !1).unwrap();
    }
    let out = alloc_pd(&dev).unwrap();
    assert_eq!(out[0], 0, "a reclaimed slot runs the command");
    dev.close().unwrap();
    assert_nothing_live(&t);
}

#[test]
fn a_stuck_firmware_times_out_and_teardown_does_not_wait_again() {
    let (mut dev, t) = open("sim:state=4M,transport=cmdq");
    t.with_pf(|pf| pf.arm_fault(Some(0x118), QueueFault::Stuck));
    let start = Instant::now();
    let mut f = dev.set_state(MigState::StopCopy).map(Option::unwrap);
    let e = match &mut f {
        Ok(file) => {
            let mut s = vec![];
            file.read_to_end(&mut s).unwrap_err()
        }
        Err(e) => std::io::Error::new(e.kind(), e.to_string()),
    };
    assert!(e.to_string().contains("did not complete"), "{e}");
    drop(f);
    assert!(start.elapsed() < Duration::from_secs(5));
    let start = Instant::now();
    // Firmware let a command time out: later commands fail at once.
    assert!(matches!(
        queue_error(alloc_pd(&dev)),
        CmdqError::Timeout { opcode: 0x118, .. }
    ));
    let fw_pages = dev.fw_pages();
    let e = dev.close().unwrap_err().to_string();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // Teardown could not take firmware's pages back: they stay mapped (the
    // device may still use them) and the error says so; the queue and the
    // mailboxes are unmapped.
    assert!(
        e.contains(&format!("3 hold {fw_pages} pages firmware never returned")),
        "{e}"
    );
    t.with_pf(|pf| assert_eq!(pf.firmware().accounting().iommu_mappings, 3));
}

/// A SAVE in flight on a hung firmware (its health counter still moving)
/// while a synchronous command times out: the SAVE is given up at once,
/// and teardown does not wait out the SAVE's own (long) deadline.
#[test]
fn a_save_in_flight_is_given_up_once_the_queue_is_fatal() {
    let cfg = PortConfig {
        command_timeout: Some(Duration::from_secs(30)),
        ..quick()
    };
    let (mut dev, t) = open_cfg("sim:state=4M,transport=cmdq", cfg, |t| {
        t.with_pf(|pf| pf.arm_fault(Some(0x118), QueueFault::Stuck));
    })
    .unwrap();
    let file = dev.set_state(MigState::StopCopy).unwrap().unwrap();
    assert_eq!(dev.port().asyncs_in_flight(), 1, "the SAVE is in flight");
    t.with_pf(|pf| pf.arm_fault(Some(0x800), QueueFault::Stuck));
    let start = Instant::now();
    let mut input = [0u8; 16];
    input[0..2].copy_from_slice(&0x800u16.to_be_bytes());
    let mut out = [0u8; 16];
    let e = dev
        .port()
        .exec_within(
            SlotClass::Command,
            &input,
            &mut out,
            Duration::from_millis(300),
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            PfError::Queue {
                error: CmdqError::Timeout { opcode: 0x800, .. },
                ..
            }
        ),
        "{e:?}"
    );
    drop(file);
    let r = dev.close();
    assert!(r.is_err(), "teardown cannot talk to a hung firmware");
    // Against the SAVE's 30 s deadline: a wide margin, no timing race.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_health_syndrome_is_reported_as_such() {
    let (dev, t) = open("sim:state=1M,transport=cmdq");
    t.with_pf(|pf| pf.set_health_syndrome(0x10, 0x0302));
    assert_eq!(
        queue_error(alloc_pd(&dev)),
        CmdqError::HealthSyndrome {
            syndrome: 0x10,
            ext_syndrome: 0x0302
        }
    );
    // Fatal: nothing more is posted.
    assert!(matches!(
        queue_error(alloc_pd(&dev)),
        CmdqError::HealthSyndrome { .. }
    ));
    let e = dev.close().unwrap_err();
    assert!(e.to_string().contains("health syndrome"), "{e}");
}

#[test]
fn a_hung_health_counter_is_reported_as_such() {
    let (dev, t) = open("sim:state=1M,transport=cmdq");
    t.with_pf(|pf| {
        pf.freeze_health_counter(true);
        pf.arm_fault(Some(0x800), QueueFault::Stuck)
    });
    assert_eq!(queue_error(alloc_pd(&dev)), CmdqError::HealthCounterStuck);
}

#[test]
fn a_failed_bring_up_undoes_itself() {
    for opcode in [0x102, 0x108, 0x104] {
        let r = open_cfg("sim:state=1M,transport=cmdq", quick(), |t| {
            t.with_pf(|pf| pf.arm_fault(Some(opcode), QueueFault::Delivery(6)));
        });
        let e = r.err().unwrap();
        assert!(e.to_string().contains("FW_ERR"), "{opcode:#x}: {e}");
    }
    // A VF the PF does not have: refused at its ENABLE_HCA, everything
    // before it undone (the test's own mapping stays).
    let (t, space) = transport("sim:state=1M,transport=cmdq");
    t.with_pf(|pf| pf.firmware_mut().iommu_map(1 << 47, 0x1000).unwrap());
    let e = CmdqDevice::open(
        "x",
        Arc::clone(&t),
        space,
        7,
        &DriverOptions::default(),
        quick(),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("ENABLE_HCA(VF)"), "{e}");
    t.with_pf(|pf| {
        assert_eq!(pf.fw_pages(), 0);
        assert!(!pf.is_enabled());
        assert_eq!(
            pf.firmware().accounting().iommu_mappings,
            1,
            "only the test's own"
        );
    });
}

#[test]
fn save_failures_keep_their_errno() {
    let (mut dev, t) = open("sim:state=4M,transport=cmdq");
    t.with_pf(|pf| pf.arm_fault(Some(0x118), QueueFault::WrongToken));
    let mut f = dev.set_state(MigState::StopCopy).unwrap().unwrap();
    let mut s = vec![];
    let e = f.read_to_end(&mut s).unwrap_err();
    // The SAVE failed before the read: the file is in error (ENODEV, as
    // the kernel's), and the message says why.
    assert_eq!(errno_of(&e), Some(Errno::ENODEV.code()), "{e}");
    assert!(e.to_string().contains("carries token"), "{e}");
    drop(f);
    drop(dev);
    t.with_pf(|pf| {
        assert!(pf.firmware().accounting().is_zero());
        assert_eq!(pf.fw_pages(), 0);
    });
}

#[test]
fn the_tool_migrates_over_the_command_queue() {
    let out = common::run(&[
        "migrate",
        "--from",
        "sim:state=16M,seed=4,transport=cmdq",
        "--to",
        "sim:transport=cmdq",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("digests_match=true"), "{}", out.stderr);
}

/// `bench --only cmdq` measures real commands through the queue.
#[test]
fn the_cmdq_benchmark_reports_commands_per_second() {
    let out = common::run(&["bench", "--only", "cmdq", "--json"]);
    let doc = common::one_json_document(out.ok());
    assert_eq!(doc["benchmark"], "cmdq");
    assert!(doc["commands_completed"].as_u64().unwrap() > 1000, "{doc}");
    for key in [
        "commands_per_sec_16b",
        "commands_per_sec_query_hca_cap",
        "commands_per_sec_create_mkey_2048_pages",
        "direct_calls_per_sec_16b",
    ] {
        assert!(doc[key].as_f64().unwrap() > 0.0, "{key}: {doc}");
    }
}

/// The transport with no completion signal: the queue finds every
/// completion by polling the entries, as over VFIO.
struct Polled(Arc<SimTransport>);

impl mlx5vf::pf::transport::Transport for Polled {
    fn describe(&self) -> String {
        format!("polled {}", self.0.describe())
    }
    fn read32(&self, offset: u32) -> std::io::Result<u32> {
        self.0.read32(offset)
    }
    fn write32(&self, offset: u32, value: u32) -> std::io::Result<()> {
        self.0.write32(offset, value)
    }
    fn enable_bus_master(&self) -> std::io::Result<()> {
        self.0.enable_bus_master()
    }
    fn iova_ranges(&self) -> Vec<(u64, u64)> {
        // VFIO's fallback ranges, the first one small: the allocator must
        // skip to the second for the larger regions.
        vec![(0x10000, 0x3f_ffff), (0xfef0_0000, (1 << 39) - 1)]
    }
    fn map_dma(&self, region: &mlx5vf::pf::memory::DmaRegion) -> std::io::Result<()> {
        self.0.map_dma(region)
    }
    fn unmap_dma(&self, region: &mlx5vf::pf::memory::DmaRegion) -> std::io::Result<()> {
        self.0.unmap_dma(region)
    }
    fn digest(&self, vf: u16) -> Option<String> {
        self.0.digest(vf)
    }
}

#[test]
fn a_migration_by_polling_alone() {
    use mlx5vf::pf::transport::Transport;
    let open_polled = |spec: &str| {
        let (t, space) = transport(spec);
        let polled = Arc::new(Polled(Arc::clone(&t)));
        let dev =
            CmdqDevice::open(spec, polled, space, 0, &DriverOptions::default(), quick()).unwrap();
        (dev, t)
    };
    let (mut src, ts) = open_polled("sim:state=12M,seed=21,transport=cmdq");
    let (mut dst, td) = open_polled("sim:state=1M,transport=cmdq");
    assert!(src.transport().describe().starts_with("polled"));
    let stream = save_all(&mut src);
    load_all(&mut dst, &stream);
    assert_eq!(src.digest(), dst.digest());
    src.close().unwrap();
    dst.close().unwrap();
    assert_nothing_live(&ts);
    assert_nothing_live(&td);
}

#[test]
fn a_stuck_command_times_out() {
    let (dev, t) = open("sim:state=1M,transport=cmdq");
    t.with_pf(|pf| pf.arm_fault(Some(0x800), QueueFault::Stuck));
    let start = Instant::now();
    assert!(matches!(
        queue_error(alloc_pd(&dev)),
        CmdqError::Timeout { opcode: 0x800, .. }
    ));
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(dev.port().take_detail().unwrap().contains("0x800"));
}

/// A save whose SAVE firmware never hands back fails naming the command
/// and the timeout, not only the failed file's errno (what `mlx5vf save`
/// prints, and what the kernel rig's stuck-firmware step asserts).
#[test]
fn a_stuck_save_is_named_in_the_transfer_error() {
    let (mut dev, t) = open("sim:state=4M,transport=cmdq");
    t.with_pf(|pf| pf.arm_fault(Some(0x118), QueueFault::Stuck));
    let e = mlx5vf::transfer::save(
        &mut dev,
        &mut std::io::sink(),
        &mlx5vf::transfer::SaveOptions::default(),
        &mlx5vf::transfer::Quiet,
    )
    .unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("the command queue: command 0x118: ") && m.contains("did not complete"),
        "{m}"
    );
}

/// The model behind a transport whose accesses can be made to fail: a
/// health register that cannot be read, an IOMMU that refuses to unmap.
struct Flaky {
    sim: Arc<SimTransport>,
    fail_health_read: AtomicBool,
    refuse_unmap: AtomicBool,
}

impl Flaky {
    fn new(sim: &Arc<SimTransport>) -> Arc<Self> {
        Arc::new(Self {
            sim: Arc::clone(sim),
            fail_health_read: AtomicBool::new(false),
            refuse_unmap: AtomicBool::new(false),
        })
    }
}

impl mlx5vf::pf::transport::Transport for Flaky {
    fn describe(&self) -> String {
        format!("flaky {}", self.sim.describe())
    }
    fn read32(&self, offset: u32) -> std::io::Result<u32> {
        if offset == iseg::HEALTH_SYND && self.fail_health_read.load(Ordering::Relaxed) {
            return Err(std::io::Error::from_raw_os_error(19));
        }
        self.sim.read32(offset)
    }
    fn write32(&self, offset: u32, value: u32) -> std::io::Result<()> {
        self.sim.write32(offset, value)
    }
    fn enable_bus_master(&self) -> std::io::Result<()> {
        self.sim.enable_bus_master()
    }
    fn iova_ranges(&self) -> Vec<(u64, u64)> {
        self.sim.iova_ranges()
    }
    fn map_dma(&self, region: &mlx5vf::pf::memory::DmaRegion) -> std::io::Result<()> {
        self.sim.map_dma(region)
    }
    fn unmap_dma(&self, region: &mlx5vf::pf::memory::DmaRegion) -> std::io::Result<()> {
        if self.refuse_unmap.load(Ordering::Relaxed) {
            return Err(std::io::Error::from_raw_os_error(22));
        }
        self.sim.unmap_dma(region)
    }
    fn wait_completion(&self, mask: u32, timeout: Duration) -> u32 {
        self.sim.wait_completion(mask, timeout)
    }
}

fn open_flaky(spec: &str) -> (CmdqDevice<Flaky>, Arc<Flaky>, Arc<DmaSpace>) {
    let (t, space) = transport(spec);
    let flaky = Flaky::new(&t);
    let dev = CmdqDevice::open(
        spec,
        Arc::clone(&flaky),
        Arc::clone(&space),
        0,
        &DriverOptions::default(),
        quick(),
    )
    .unwrap();
    (dev, flaky, space)
}

/// Teardown takes firmware's pages back by the driver's own count: the
/// model announces none through QUERY_PAGES (no negative counts), and
/// every page comes back.
#[test]
fn teardown_takes_pages_back_by_its_own_count() {
    let (dev, t) = open("sim:state=1M,transport=cmdq");
    let given = dev.fw_pages();
    assert_eq!(given, 8 + 24 + 4);
    assert_eq!(t.with_pf(|pf| pf.fw_pages()), given);
    dev.close().unwrap();
    assert_nothing_live(&t);
    t.with_pf(|pf| assert_eq!(pf.firmware().accounting().iommu_mappings, 0));
}

/// Firmware that returns no page when asked: teardown stops with a clear
/// error, and the pages it kept are neither unmapped nor freed (counted,
/// and the error says so).
#[test]
fn pages_firmware_keeps_stay_mapped_and_are_reported() {
    let (dev, t, space) = open_with_space("sim:state=1M,transport=cmdq");
    let port = Arc::clone(dev.port());
    t.with_pf(|pf| pf.withhold_pages(true));
    let e = dev.close().unwrap_err().to_string();
    assert!(
        e.contains("MANAGE_PAGES(TAKE) of function 1 returned no page")
            && e.contains("3 DMA regions (147456 bytes) stay allocated")
            && e.contains("3 hold 36 pages firmware never returned"),
        "{e}"
    );
    let q = port.quarantined();
    assert_eq!((q.firmware_regions, q.firmware_pages), (3, 36), "{q:?}");
    t.with_pf(|pf| {
        assert_eq!(pf.fw_pages(), 36);
        assert_eq!(
            pf.firmware().accounting().iommu_mappings,
            3,
            "firmware's pages stay mapped, the rest is unmapped"
        );
    });
    // The memory stays allocated (in the device's address space).
    assert_eq!(space.usage(), (3, 36 * 4096));
}

/// A health register that cannot be read says the device is gone, not a
/// syndrome of all ones.
#[test]
fn a_failed_health_read_is_a_device_gone() {
    let (dev, flaky, _) = open_flaky("sim:state=1M,transport=cmdq");
    flaky
        .sim
        .with_pf(|pf| pf.arm_fault(Some(0x800), QueueFault::Stuck));
    flaky.fail_health_read.store(true, Ordering::Relaxed);
    let mut input = [0u8; 16];
    input[0..2].copy_from_slice(&0x800u16.to_be_bytes());
    let mut out = [0u8; 16];
    let e = dev
        .port()
        .exec(SlotClass::Command, &input, &mut out)
        .unwrap_err();
    assert!(
        matches!(
            e,
            PfError::Queue {
                error: CmdqError::DeviceGone,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_fatal());
}

/// `cmd_exec_to` is device data: a garbage value is clamped to 10
/// minutes, a sensible one taken as it is.
#[test]
fn the_advertised_command_timeout_is_clamped() {
    let spec = "sim:state=1M,transport=cmdq";
    let parsed: SimSpec = spec.parse().unwrap();
    for (advertised, want) in [
        (0xffff_fffe, Duration::from_secs(600)),
        (2_000, Duration::from_secs(2)),
        (0, Duration::from_secs(60)),
    ] {
        let space = Arc::new(DmaSpace::default());
        let regs = RegisterConfig {
            cmd_exec_timeout_ms: advertised,
            ..RegisterConfig::DEFAULT
        };
        let t = Arc::new(SimTransport::new(spec, &parsed, regs, &space).unwrap());
        let cfg = PortConfig {
            command_timeout: None,
            ..quick()
        };
        let port = Port::open(t, space, cfg).unwrap();
        assert_eq!(port.timeout(), want, "cmd_exec_to {advertised:#x}");
    }
}

/// A buffer whose unmap the IOMMU refuses is never freed: its memory and
/// IOVA stay taken (the device may still write them), it is counted, and
/// close reports it.
#[test]
fn a_refused_unmap_keeps_the_memory_and_is_reported_at_close() {
    let (dev, flaky, space) = open_flaky("sim:state=1M,transport=cmdq");
    let port = Arc::clone(dev.port());
    let mut hal = mlx5vf::pf::hal::CmdqHal::new(Arc::clone(&port), true);
    let pd = Pd(u32::from_be_bytes(
        alloc_pd(&dev).unwrap()[8..12].try_into().unwrap(),
    ));
    let buf = hal.alloc_buffer(4, DmaDirection::FromDevice).unwrap();
    let mkey = hal.map_buffers(pd, &[buf]).unwrap();
    let mappings = || {
        flaky
            .sim
            .with_pf(|pf| pf.firmware().accounting().iommu_mappings)
    };
    let mapped = mappings();
    flaky.refuse_unmap.store(true, Ordering::Relaxed);
    hal.unmap_buffers(mkey, &[buf]).unwrap();
    hal.free_buffer(buf);
    assert_eq!(mappings(), mapped, "still mapped in the IOMMU");
    assert!(space.get(buf.0).is_some(), "its memory is kept");
    let q = port.quarantined();
    assert_eq!((q.unmap_failed, q.bytes), (1, 4 * 4096), "{q:?}");
    let other = hal.alloc_buffer(4, DmaDirection::FromDevice).unwrap();
    assert_ne!(other.0, buf.0, "its IOVA is not handed out again");
    hal.free_buffer(other);
    flaky.refuse_unmap.store(false, Ordering::Relaxed);
    drop(hal);
    drop(port);
    let e = dev.close().unwrap_err().to_string();
    assert!(
        e.contains("1 DMA regions (16384 bytes) stay allocated")
            && e.contains("the IOMMU refused to unmap 1"),
        "{e}"
    );
}
