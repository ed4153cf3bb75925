//! Typed firmware command layouts, bit-exact with Linux `mlx5_ifc.h`.
//!
//! One file per command family ([`hca_cap`], [`pd`], [`mkey`], [`vhca`],
//! [`migration`], [`page_track`], and [`function`] for a PF's own bring-up);
//! each declares its structures as field tables with the
//! [`layout`](layout/index.html) machinery (member names follow the Linux
//! header, reserved members included), plus a typed [`Command`] per command
//! whose `encode` writes the input into a caller buffer and whose `decode`
//! checks the status and reads the output.
//!
//! # No-panic contract
//! Nothing here panics on any input. Decoding a buffer that is too short is a
//! [`DecodeError::Truncated`]; a non-OK status is a [`DecodeError::Failed`]
//! carrying a [`CmdError`] (opcode, op_mod, status, syndrome); encoding into a
//! buffer that is too small is an [`EncodeError::InsufficientSize`] with the
//! buffer untouched. Firmware output is untrusted input.

pub mod checked;
pub mod command;
pub mod function;
pub mod hca_cap;
pub mod header;
pub mod layout;
pub mod migration;
pub mod mkey;
pub mod page_track;
pub mod pd;
pub mod status;
pub mod vhca;

pub use command::{Command, EncodeError};
pub use header::{DecodeError, check_output, checked_output};
pub use layout::{
    Checked, CheckedMut, Field, FieldError, Layout, LayoutKind, Nested, Structure, Tail,
};
pub use status::{CmdError, CmdStatus, Opcode};

/// Every structure this crate describes, for tools that encode and decode by
/// name (`mlx5vf ifc`).
pub const LAYOUTS: &[&Layout] = &[
    &hca_cap::query_hca_cap_in::LAYOUT,
    &hca_cap::query_hca_cap_out::LAYOUT,
    &hca_cap::cmd_hca_cap::LAYOUT,
    &hca_cap::cmd_hca_cap_2::LAYOUT,
    &pd::alloc_pd_in::LAYOUT,
    &pd::alloc_pd_out::LAYOUT,
    &pd::dealloc_pd_in::LAYOUT,
    &pd::dealloc_pd_out::LAYOUT,
    &mkey::create_mkey_in::LAYOUT,
    &mkey::create_mkey_out::LAYOUT,
    &mkey::destroy_mkey_in::LAYOUT,
    &mkey::destroy_mkey_out::LAYOUT,
    &mkey::mkc::LAYOUT,
    &vhca::suspend_vhca_in::LAYOUT,
    &vhca::suspend_vhca_out::LAYOUT,
    &vhca::resume_vhca_in::LAYOUT,
    &vhca::resume_vhca_out::LAYOUT,
    &migration::query_vhca_migration_state_in::LAYOUT,
    &migration::query_vhca_migration_state_out::LAYOUT,
    &migration::save_vhca_state_in::LAYOUT,
    &migration::save_vhca_state_out::LAYOUT,
    &migration::load_vhca_state_in::LAYOUT,
    &migration::load_vhca_state_out::LAYOUT,
    &page_track::adv_virtualization_cap::LAYOUT,
    &page_track::page_track::LAYOUT,
    &page_track::page_track_range::LAYOUT,
    &page_track::page_track_report_entry::LAYOUT,
    &page_track::create_page_track_obj_in::LAYOUT,
    &page_track::modify_page_track_obj_in::LAYOUT,
    &page_track::query_page_track_obj_in::LAYOUT,
    &page_track::destroy_page_track_obj_in::LAYOUT,
    &page_track::general_obj_out_cmd_hdr::LAYOUT,
    &page_track::query_page_track_obj_out::LAYOUT,
    &page_track::cqe64::LAYOUT,
    &function::enable_hca_in::LAYOUT,
    &function::enable_hca_out::LAYOUT,
    &function::disable_hca_in::LAYOUT,
    &function::query_issi_in::LAYOUT,
    &function::query_issi_out::LAYOUT,
    &function::set_issi_in::LAYOUT,
    &function::query_pages_in::LAYOUT,
    &function::query_pages_out::LAYOUT,
    &function::manage_pages_in::LAYOUT,
    &function::manage_pages_out::LAYOUT,
    &function::set_hca_cap_in::LAYOUT,
    &function::init_hca_in::LAYOUT,
    &function::teardown_hca_in::LAYOUT,
    &function::teardown_hca_out::LAYOUT,
];

/// Looks a structure up by its Linux name (without `mlx5_ifc_` and `_bits`).
pub fn layout_by_name(name: &str) -> Option<&'static Layout> {
    LAYOUTS.iter().copied().find(|l| l.name == name)
}

// Every command's tables agree with its opcode (see `Command::TABLES_AGREE`):
// evaluated here so a disagreement fails the build of this crate, not only of
// the code that happens to send the command.
const _: () = <hca_cap::QueryHcaCap as Command>::TABLES_AGREE;
const _: () = <pd::AllocPd as Command>::TABLES_AGREE;
const _: () = <pd::DeallocPd as Command>::TABLES_AGREE;
const _: () = <mkey::DestroyMkey as Command>::TABLES_AGREE;
const _: () = <vhca::SuspendVhca as Command>::TABLES_AGREE;
const _: () = <vhca::ResumeVhca as Command>::TABLES_AGREE;
const _: () = <migration::QueryMigrationState as Command>::TABLES_AGREE;
const _: () = <migration::SaveVhcaState as Command>::TABLES_AGREE;
const _: () = <migration::LoadVhcaState as Command>::TABLES_AGREE;
const _: () = <page_track::ModifyPageTrack as Command>::TABLES_AGREE;
const _: () = <page_track::QueryAdvVirtualizationCap as Command>::TABLES_AGREE;
const _: () = <page_track::QueryPageTrack as Command>::TABLES_AGREE;
const _: () = <page_track::DestroyPageTrack as Command>::TABLES_AGREE;
const _: () = assert!(matches!(
    page_track::create_page_track_obj_in::LAYOUT.opcode(),
    Some(op) if op == Opcode::CreateGeneralObject.raw()
));
const _: () = <function::EnableHca as Command>::TABLES_AGREE;
const _: () = <function::DisableHca as Command>::TABLES_AGREE;
const _: () = <function::QueryIssi as Command>::TABLES_AGREE;
const _: () = <function::SetIssi as Command>::TABLES_AGREE;
const _: () = <function::QueryPages as Command>::TABLES_AGREE;
const _: () = <function::InitHca as Command>::TABLES_AGREE;
const _: () = <function::TeardownHca as Command>::TABLES_AGREE;
// CREATE_MKEY has a variable-length input and no `Command`; its table is
// checked the same way.
const _: () = assert!(matches!(
    mkey::create_mkey_in::LAYOUT.opcode(),
    Some(op) if op == Opcode::CreateMkey.raw()
));

/// The largest fixed command input the core sends (CREATE_MKEY's variable
/// part aside): 32 bytes (SAVE/LOAD).
pub const MAX_FIXED_IN: usize = 32;
/// The largest command output the core reads: `query_hca_cap_out`.
pub const MAX_OUT: usize = hca_cap::query_hca_cap_out::SIZE;

#[cfg(test)]
mod tests;
