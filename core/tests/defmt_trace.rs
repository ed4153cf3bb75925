//! The `defmt` feature in a test build: the driver's decisions reach a
//! global logger, one frame per decision. Run with
//! `DEFMT_LOG=debug cargo test -p mlx5vf-core --features defmt --test defmt_trace`
//! (defmt filters at compile time and keeps only errors by default).
//!
//! A host has no defmt decoder here (frames name their format strings by
//! address in an ELF section), so the test counts frames: each decision the
//! engine and the device trace is one `acquire`/`release` pair.
#![cfg(feature = "defmt")]

use std::sync::atomic::{AtomicUsize, Ordering};

use mlx5vf_core::device::Config;
use mlx5vf_core::hal::HalErrorKind;
use mlx5vf_core::save::{FileState, SaveFailure};
use mlx5vf_core::vfio::MigState;
use mlx5vf_sim::testkit::{FailAfter, complete_all, complete_one, device, read, set_state};

static FRAMES: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

#[defmt::global_logger]
struct CountingLogger;

// SAFETY: defmt calls acquire/release in pairs from one thread at a time
// in this test (there is one test function), and the counters are atomics.
unsafe impl defmt::Logger for CountingLogger {
    fn acquire() {}
    unsafe fn flush() {}
    unsafe fn release() {
        FRAMES.fetch_add(1, Ordering::SeqCst);
    }
    unsafe fn write(bytes: &[u8]) {
        BYTES.fetch_add(bytes.len(), Ordering::SeqCst);
    }
}

defmt::timestamp!("{=u64}", 0);

fn frames() -> usize {
    FRAMES.load(Ordering::SeqCst)
}

#[test]
fn every_decision_of_a_save_is_one_frame() {
    // A clean stop-copy save in chunks: 20 MiB in objects of 1-2 MiB with
    // the Linux policy (8 MiB chunks, two slots).
    let mut dev = device("sim:state=20M,object=1M-2M,seed=5", Config::default());
    let before = frames();
    let file = set_state(&mut dev, MigState::StopCopy, 0)
        .unwrap()
        .expect("a saving file");
    assert!(
        frames() > before,
        "no frames: build with DEFMT_LOG=debug (defmt drops debug frames by default)"
    );
    let mut stream = Vec::new();
    loop {
        match read(&mut dev, file, 1 << 20, &mut stream) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => assert!(complete_all(&mut dev, 1) == 1, "stalled"),
        }
    }
    let stats = dev.save_engine().unwrap().stats();
    assert_eq!(dev.save_engine().unwrap().state(), FileState::Complete);
    assert!(stats.chunks >= 3, "{stats:?}");
    // RUNNING -> RUNNING_P2P -> STOP -> STOP_COPY: one frame an arc; each
    // chunk: its SAVE issued and completed; each grown slot and held-back
    // chunk; the stream's completion.
    let expected =
        3 + 2 * stats.chunks as usize + stats.grown as usize + stats.held_back as usize + 1;
    assert_eq!(frames() - before, expected, "{stats:?}");
    assert!(BYTES.load(Ordering::SeqCst) > 0);

    // A failing file says so once, with its reason: the second chunk's
    // SAVE cannot be issued.
    let mut dev = device("sim:state=20M,object=1M-2M,seed=5", Config::default());
    dev.hal_mut().knobs.fail_start_save = Some(FailAfter::new(1, HalErrorKind::Delivery));
    let _file = set_state(&mut dev, MigState::StopCopy, 0)
        .unwrap()
        .expect("a saving file");
    let before = frames();
    assert!(complete_one(&mut dev));
    // The first chunk completed, the second was issued and could not start,
    // the file failed.
    assert_eq!(frames() - before, 3);
    assert_eq!(
        dev.save_engine().unwrap().failure(),
        Some(SaveFailure::NotStarted)
    );
}
