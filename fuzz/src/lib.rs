//! # mlx5vf-fuzz
//!
//! Fuzz targets for everything in mlx5vf that parses untrusted bytes:
//! firmware command outputs ([`ifc_decode`](mod@targets::ifc_decode)), incoming migration
//! streams ([`stream_reader`](mod@targets::stream_reader), [`resume_engine`](mod@targets::resume_engine)), the
//! saving engine under hostile firmware ([`save_engine`](mod@targets::save_engine)) and the
//! VFIO state graph ([`state_graph`](mod@targets::state_graph)), the device
//! dirty-page tracker's report ingestion and life cycle
//! ([`tracker_report`](mod@targets::tracker_report)), and command-queue
//! entries and mailbox chains a PF hands back
//! ([`cmdq_decode`](mod@targets::cmdq_decode)).
//!
//! Each target is a plain function of the fuzz input, so the
//! `fuzz_targets/*.rs` binaries (run by `cargo +nightly fuzz run TARGET`) are
//! one-liners and `tests/corpus.rs` runs the same functions over the
//! committed corpus on stable. A failing check is a panic with a message
//! naming the broken invariant.
//!
//! The rest of the crate is what the targets share: a platform over the
//! simulated firmware ([`hal`]), shim-like drivers for a device
//! ([`harness`]), an independent model of the stream format ([`streams`])
//! and of the Linux VFIO state machine ([`oracle`]), and the encoder the seed
//! corpus is written with ([`seeds`]).

pub mod hal;
pub mod harness;
pub mod oracle;
pub mod seeds;
pub mod stats;
pub mod streams;
pub mod targets;
