//! # mlx5vf (userspace shim)
//!
//! The `std` side of mlx5vf: the library behind the `mlx5vf` command-line
//! tool, which drives the `no_std` driver logic of [`mlx5vf_core`] from an
//! ordinary process. Today it holds the engineer's tools that need no device:
//!
//! - `mlx5vf ifc`: encode and decode firmware command structures by their
//!   Linux `mlx5_ifc.h` names and members ([`cli::ifc`]), for reading command
//!   traces and for checking [`mlx5vf_core::ifc`] against Linux from outside;
//! - `mlx5vf states`: the VFIO migration state graph, answering what the Linux
//!   VFIO core's `vfio_mig_get_next_state()` answers ([`cli::states`]);
//! - `mlx5vf inspect`: list the records of a migration stream (Linux format or
//!   ours, with its integrity record) in constant memory ([`cli::inspect`]).
//!
//! The device-backed commands (save, load, migrate, bench over the built-in
//! simulated device or a VFIO PF) join them in [`cli::Command`].
//!
//! # Features
//! `cli` (the tool: clap, indicatif, serde) and `sim` (the built-in
//! simulated device) are on by default. A VMM embedding the transfer loop
//! and the VFIO client builds with `default-features = false`: then only
//! `vfio-mig:`, `vfio-fd:` and `vfio-pf:` specs open, and a VMM hands the
//! client the descriptors it holds with [`vfio::VfioDevice::adopt`].
//!
//! [`pf`] drives a PF's command queue itself (the `vfio-pf:` backend in
//! [`vfio_pf`], and `sim:…,transport=cmdq` over the register-level model);
//! [`local`] is the in-process driver device both it and [`sim`] use.
//!
//! # Exit status
//! `0` success; `1` the request was well formed but failed (no such
//! transition, a malformed stream, an I/O error); `2` a usage error (unknown
//! name, bad number, bad hex, …). Every error is one line on standard error,
//! starting `mlx5vf: `. See [`cli::Error::exit_code`].
// Only `vfio::sys` (the ioctls) may use `unsafe`; it says why each use holds.
#![deny(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod backend;
#[cfg(feature = "cli")]
pub mod cli;
pub mod dma_logging;
pub mod interrupt;
pub mod local;
pub mod net;
pub mod pf;
pub mod pipe;
pub mod recognise;
#[cfg(feature = "sim")]
pub mod sim;
pub mod timeline;
pub mod transfer;
pub mod vfio;
pub mod vfio_pf;
