//! # mlx5vf-core
//!
//! The mlx5 VF live-migration driver logic of Linux's `mlx5-vfio-pci`
//! (including *chunk mode*, for device states above 4 GiB), as a `no_std`,
//! allocation-free library that drivers vendor:
//!
//! - [`ifc`]: firmware command layouts, bit-exact with `mlx5_ifc.h`;
//! - [`stream`]: the migration stream record codec and the resume-side reader;
//! - [`vfio`]: the VFIO migration states, the next-state graph and what each arc means;
//! - [`save`] and [`load`]: the pure saving and resuming engines;
//! - [`hal`]: the small trait a platform implements (commands, one async SAVE,
//!   DMA buffers);
//! - [`device`]: the per-VF driver loop joining all of the above;
//! - [`cmdq`]: a PF's command queue (entries, mailboxes, slots, completions)
//!   for platforms that drive the firmware themselves;
//! - [`errno`]: the kernel errno vocabulary the driver reports.
//!
//! Firmware output and incoming migration streams are untrusted: nothing in
//! this crate panics on any input, and nothing allocates.
#![no_std]
#![forbid(unsafe_code)]
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

#[cfg(test)]
extern crate std;

mod macros;

pub mod cmdq;
pub mod device;
pub mod errno;
pub mod hal;
pub mod ifc;
pub mod load;
pub mod save;
pub mod stream;
pub mod tracker;
pub mod vfio;
