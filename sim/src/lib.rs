//! # mlx5vf-sim
//!
//! A firmware model of an mlx5 PF with migratable VFs: the test double every
//! other part of mlx5vf is proven against, and the default device of the
//! `mlx5vf` CLI.
//!
//! It answers the same command bytes real firmware does (QUERY_HCA_CAP,
//! ALLOC/DEALLOC_PD, CREATE/DESTROY_MKEY, SUSPEND/RESUME_VHCA,
//! QUERY_VHCA_MIGRATION_STATE, SAVE/LOAD_VHCA_STATE), decoded with its own
//! field table ([`wire`]) rather than `mlx5vf-core`'s, so a layout mistake in
//! the driver is caught, not mirrored. SAVE and LOAD move image bytes through
//! MTT mkeys and a simulated IOMMU ([`iommu`]) into the caller's real
//! memory. A VF's state ([`objects`]) is generated, not stored, so states of
//! many GiB cost only a few KiB; images ([`image`]) are verified byte by byte
//! on LOAD, and both sides print the same [`Digest`] after a good migration.
//!
//! ```
//! use mlx5vf_sim::{Firmware, FirmwareConfig, NoDma, SimSpec};
//!
//! let spec: SimSpec = "sim:state=20M,seed=7".parse()?;
//! let mut fw = Firmware::new(&FirmwareConfig::from_spec(&spec))?;
//! // ALLOC_PD: opcode 0x800 in the first 16 input bytes.
//! let mut input = [0u8; 16];
//! input[0..2].copy_from_slice(&0x800u16.to_be_bytes());
//! let mut output = [0u8; 16];
//! fw.exec(&input, &mut output, &mut NoDma)?;
//! assert_eq!(output[0], 0); // status OK
//! assert_eq!(fw.accounting().pds, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Device spec
//! `sim` followed by optional `:key=value,...` (see [`spec`] for the full
//! grammar):
//!
//! | key | value | default |
//! |---|---|---|
//! | `state` | size (`20M`, `5G`; K/M/G/T binary, or plain bytes) — exact bytes of a full single-image SAVE | `1G` |
//! | `seed` | integer | `1` |
//! | `chunks` | `on`/`off` | `on` |
//! | `precopy` | `on`/`off` | `on` |
//! | `migratable` | `on`/`off` | `on` |
//! | `object` | `MIN-MAX` sizes | `64K-12M` |
//! | `dirty` | size dirtied per workload tick | `0` |
//! | `fw-rate` | `SIZE/s` or `off` | `off` |
//! | `latency` | `0`, `50us`, `2ms`, `1s` | `0` |
//! | `vfs` | VF count, 1..=[`MAX_VFS`] | `1` |
//! | `content` | `on`/`off` | `on` |
//! | `transport` | `call` (function calls) / `cmdq` (BAR0 and the command queue, [`pf`]) | `call` |
//!
//! ## Features
//! - `std`: the `timing` module (timing model and worker thread) and the
//!   `host` module (host memory for `std` harnesses). Without it the crate
//!   is `no_std` and allocation-free.
//! - `hal`: the `report_host` module, the host's side of the page
//!   tracker's reporting channel over any `mlx5vf-core` `Hal` (the test
//!   kit's and the tool's simulated device share it).
//! - `testkit` (implies `std` and `hal`): the `testkit` module, the one test
//!   platform core's integration tests and the fuzz targets drive
//!   `mlx5vf-core` with. These two are the only parts of this crate that
//!   use the core.
//!
//! Nothing here panics on any input (command bytes, image bytes, spec
//! strings); every bound is a named constant.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

#[cfg(any(feature = "std", test))]
extern crate std;

mod bitset;

pub mod fault;
pub mod firmware;
#[cfg(feature = "std")]
pub mod host;
pub mod image;
pub mod iommu;
pub mod objects;
pub mod pf;
#[cfg(feature = "hal")]
pub mod report_host;
pub mod spec;
pub mod syndrome;
#[cfg(feature = "testkit")]
pub mod testkit;
#[cfg(feature = "std")]
pub mod timing;
pub mod tracker;
pub mod wire;

pub use fault::Faults;
pub use firmware::{
    Accounting, ConfigError, ExecError, Firmware, FirmwareConfig, LoadProgress, MAX_VFS, PfConfig,
    SuspendState, VfConfig, VhcaState,
};
pub use iommu::{Dma, DmaFault, IommuError, NoDma};
pub use objects::Digest;
pub use spec::{SimSpec, SpecError};
pub use syndrome::Syndrome;
#[cfg(feature = "std")]
pub use timing::{TimingModel, Worker};
