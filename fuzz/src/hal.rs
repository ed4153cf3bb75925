//! The platform the fuzz targets drive a [`Device`](mlx5vf_core::device::Device)
//! through: the sim's test kit ([`mlx5vf_sim::testkit`]) with one fuzz
//! policy, [`MAX_ALLOC_BYTES`].

pub use mlx5vf_sim::testkit::{
    ExecCorruption, FailAfter, FailOpcode, Knobs, PAGE, PendingSave, Taint, TestHal,
};

/// Largest buffer the platform allocates; bigger requests get `ENOMEM`.
///
/// The states the targets use are a few KiB, so only a lying firmware (or a
/// sizing bug) asks for more, and then costs nothing.
pub const MAX_ALLOC_BYTES: u64 = 16 << 20;
