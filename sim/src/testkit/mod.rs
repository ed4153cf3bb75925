//! The one test kit: what core's integration tests and the fuzz targets
//! drive a [`Device`] of `mlx5vf-core` with, so neither writes its own.
//!
//! - [`TestHal`]: the simulated firmware, real buffer memory
//!   ([`HostMemory`](crate::host::HostMemory)), SAVEs that complete only when
//!   the test says so, and the `Hal` contract asserted;
//! - [`FaultInjector`] and [`Knobs`]: calls that fail and firmware that lies,
//!   once, after a chosen number of calls succeed;
//! - [`ports`]: a shim's `read()` and `write()` through the core's
//!   `file_ops`;
//! - device helpers: [`device`], [`probe`], [`complete_one`],
//!   [`complete_all`], [`set_state`], [`recover`], [`assert_clean`];
//! - [`migration`]: a source/destination pair and its bounded drive loop
//!   ([`migration::pump`]).
//!
//! The kit depends on `mlx5vf-core`, whose integration tests depend on the
//! kit; they see one and the same core crate. Core's unit tests must not use
//! it (they would see a second copy of the core).
// A test kit reports a broken contract by panicking with a message, and
// indexes buffers the test itself sized.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

pub mod bookkeeping;
mod faults;
mod hal;
pub mod migration;
pub mod ports;
mod report_channel;

use std::vec;

use mlx5vf_core::device::{
    Config, Device, DeviceError, FileId, PROBE_SCRATCH_LEN, Probe, SetStateError,
};
use mlx5vf_core::hal::Hal;
use mlx5vf_core::vfio::MigState;

pub use crate::report_host::HostChannel;
pub use faults::{ExecCorruption, FailAfter, FailOpcode, FaultInjector, Knobs, Taint, opcode_of};
pub use hal::{PAGE, PendingLoad, PendingSave, TestHal, firmware_config};
pub use ports::{read, write, write_waiting};

/// A `Hal` built on a [`TestHal`], so the helpers reach its firmware,
/// buffers and pending SAVEs through any wrapper.
pub trait Platform: Hal {
    /// The `TestHal` underneath.
    fn test_hal(&self) -> &TestHal;
    /// The `TestHal` underneath, mutably.
    fn test_hal_mut(&mut self) -> &mut TestHal;
    /// Every lie firmware told through this platform and its wrappers.
    fn taint(&self) -> Taint;
    /// Disarms every failure and lie still armed, here and underneath.
    fn disarm(&mut self);
}

/// Probes `dev` for VF 0.
///
/// # Errors
/// What probing said.
pub fn probe<H: Platform>(dev: &mut Device<H>) -> Result<Probe, DeviceError> {
    let mut scratch = vec![0u8; PROBE_SCRATCH_LEN];
    dev.probe(0, &mut scratch)
}

/// A device over the firmware `spec` describes, probed for VF 0.
///
/// # Panics
/// On a bad spec, or when probing fails.
pub fn device(spec: &str, cfg: Config) -> Device<TestHal> {
    let mut dev = Device::new(TestHal::new(spec), cfg);
    if let Err(e) = probe(&mut dev) {
        panic!("probe {spec}: {e}");
    }
    dev
}

/// Executes the oldest pending SAVE of `dev` (or, with none, its pending
/// LOAD) and hands its output to the device; `false` if nothing was pending.
///
/// # Panics
/// When the device refuses the completion of the command it started.
pub fn complete_one<H: Platform>(dev: &mut Device<H>) -> bool {
    if let Some((token, out)) = dev.hal_mut().test_hal_mut().run_save() {
        let r = dev.handle_save_completion(token, &out);
        assert!(r.is_ok(), "completion of the SAVE in flight refused: {r:?}");
        return true;
    }
    match dev.hal_mut().test_hal_mut().run_load() {
        Some((token, out)) => {
            let r = dev.handle_load_completion(token, &out);
            assert!(r.is_ok(), "completion of the LOAD in flight refused: {r:?}");
            true
        }
        None => false,
    }
}

/// Completes every pending SAVE (each completion may start another chunk),
/// at most `limit` of them; returns how many ran.
pub fn complete_all<H: Platform>(dev: &mut Device<H>, limit: u32) -> u32 {
    let mut n = 0;
    while n < limit && complete_one(dev) {
        n += 1;
    }
    n
}

/// `set_state`, completing a SAVE whenever the device says one is in flight
/// (what a shim does while it holds the state lock), at most `max_waits`
/// times.
///
/// # Errors
/// What the device said.
///
/// # Panics
/// When the device waits for a SAVE that was never started.
pub fn set_state<H: Platform>(
    dev: &mut Device<H>,
    target: MigState,
    max_waits: u32,
) -> Result<Option<FileId>, SetStateError> {
    let mut waits = 0;
    loop {
        match dev.set_state(target) {
            Err(e)
                if matches!(
                    e.error,
                    DeviceError::SaveInFlight | DeviceError::LoadInFlight
                ) && waits < max_waits =>
            {
                assert!(
                    complete_one(dev),
                    "set_state({target}) waits for a SAVE that was never started"
                );
                waits += 1;
            }
            r => return r,
        }
    }
}

/// Brings a device back to RUNNING with nothing allocated, as a VFIO user
/// does after a failure: every fault disarmed, the VF attached, files closed,
/// outstanding SAVEs completed, then a reset.
pub fn recover<H: Platform>(dev: &mut Device<H>) {
    dev.hal_mut().disarm();
    let hal = dev.hal_mut().test_hal_mut();
    hal.fw.faults_mut().clear();
    hal.fw.attach_vf(0);
    dev.handle_attach();
    complete_all(dev, 64);
    dev.close();
    complete_all(dev, 64);
    dev.hal_mut().test_hal_mut().fw.reset_vf(0);
    dev.handle_reset();
    dev.open();
}

/// Asserts that a recovered device holds nothing: no buffer, PD, mkey or
/// IOMMU mapping, no SAVE in flight. When firmware refused to free an mkey
/// or PD the device must say so (its leak counters match what the sim still
/// holds), unless firmware lied about those resources' numbers.
///
/// # Panics
/// When something leaked.
pub fn assert_clean<H: Platform>(dev: &Device<H>) {
    let hal = dev.hal().test_hal();
    let acc = hal.accounting();
    let stats = dev.stats();
    assert!(dev.is_idle(), "device not idle after recovery: {dev:?}");
    assert_eq!(dev.state(), MigState::Running, "state after recovery");
    assert_eq!(stats.buffer_bytes, 0, "device buffer bytes after recovery");
    assert_eq!(hal.live_buffers, 0, "platform buffers leaked");
    assert_eq!(hal.live_bytes, 0, "platform buffer bytes leaked");
    assert!(hal.pending.is_empty(), "SAVE still pending");
    assert_eq!(
        (acc.iommu_mappings, acc.iommu_bytes),
        (0, 0),
        "IOMMU mappings leaked: {acc:?}"
    );
    if !dev.hal().taint().resource_lie {
        assert_eq!(
            acc.mkeys, stats.leaked_mkeys,
            "mkeys alive in firmware vs reported leaked: {acc:?} {stats:?}"
        );
        assert_eq!(
            acc.pds, stats.leaked_pds,
            "PDs alive in firmware vs reported leaked: {acc:?} {stats:?}"
        );
    }
}
