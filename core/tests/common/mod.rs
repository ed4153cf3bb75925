//! Core's test platform is the sim's test kit ([`mlx5vf_sim::testkit`]),
//! migration harness included.
#![allow(dead_code, unreachable_pub, missing_docs, unused_imports)]

use mlx5vf_core::device::{Device, DeviceError, FileId};
use mlx5vf_core::vfio::MigState;

pub use mlx5vf_sim::testkit::migration::{Migration, Reads, Report, Rng};
pub use mlx5vf_sim::testkit::{
    FailAfter, PAGE, TestHal, complete_one, device, read, write, write_waiting,
};

/// `set_state`, completing SAVEs whenever the device asks to wait.
pub fn set_state(
    dev: &mut Device<TestHal>,
    target: MigState,
) -> Result<Option<FileId>, DeviceError> {
    mlx5vf_sim::testkit::set_state(dev, target, u32::MAX).map_err(|e| e.error)
}
