//! The device dirty-page tracker: the `adv_virtualization` capability, the
//! page-track general object (CREATE / MODIFY / QUERY / DESTROY_GENERAL_OBJECT
//! with `obj_type` 0x46), its report entries and the CQE fields of the
//! reporting channel.
//!
//! General-object commands put `obj_type` where other commands have
//! `op_mod` (bits 0x30..0x40 of the input header), so every command here
//! reports [`OBJ_TYPE_PAGE_TRACK`] as its op_mod and the generic header
//! writer puts it in the right place.

use super::command::{Command, EncodeError};
use super::hca_cap::{CAPABILITY_OFFSET, CapMode, query_hca_cap_in, query_hca_cap_out};
use super::header::{DecodeError, checked_output, write_in_header};
use super::layout::{Checked, CheckedMut, FieldError, layout};
use super::status::Opcode;
use crate::macros::enum_with_unknown;

/// `MLX5_OBJ_TYPE_PAGE_TRACK`.
pub const OBJ_TYPE_PAGE_TRACK: u16 = 0x46;
/// `track_type` of every tracker Linux creates (the header gives the value
/// no name).
pub const TRACK_TYPE: u8 = 1;
/// `modify_field_select` of a report request: range and state (Linux always
/// sends both bits; the header names neither).
pub const MODIFY_SELECT_RANGE_AND_STATE: u64 = 0x3;
/// `cap_type` of the `adv_virtualization_cap` page in QUERY_HCA_CAP's op_mod
/// (`MLX5_CAP_ADV_VIRTUALIZATION`).
pub const CAP_TYPE_ADV_VIRTUALIZATION: u16 = 0x26;
/// Ranges one tracker can hold: `num_ranges` is an 8-bit field.
pub const MAX_TRACK_RANGES: usize = 255;
/// Bytes of one `page_track_range`.
pub const TRACK_RANGE_LEN: usize = 16;
/// Bytes of one `page_track_report_entry` (one dirty page's address).
pub const REPORT_ENTRY_LEN: usize = 8;
/// The largest CREATE input: the fixed part and [`MAX_TRACK_RANGES`] ranges.
pub const CREATE_IN_MAX: usize =
    create_page_track_obj_in::SIZE + MAX_TRACK_RANGES * TRACK_RANGE_LEN;
/// Bytes of a CQE as the reporting channel hands it over (`mlx5_cqe64`;
/// the upper half of a 128-byte CQE).
pub const CQE_LEN: usize = 64;
/// `op_own` opcode (bits 7..4) of a message received with immediate data:
/// `MLX5_CQE_RESP_SEND_IMM`.
pub const CQE_OPCODE_RESP_SEND_IMM: u8 = 3;
/// `op_own` opcode of a CQE slot firmware has not written (`MLX5_CQE_INVALID`).
pub const CQE_OPCODE_INVALID: u8 = 0xf;

layout! {
    /// `adv_virtualization_cap` (the QUERY_HCA_CAP page at cap_type 0x26),
    /// as merged in Linux (3 reserved + 5 bits for the message and page
    /// sizes; some 2022 postings had 8-bit fields with the same low bits).
    pub mod adv_virtualization_cap: LayoutKind::Capability, 256 bytes, tiled {
        reserved_at_0: u8 = [0x00, 0x03],
        pg_track_log_max_num: u8 = [0x03, 0x05],
        pg_track_max_num_range: u8 = [0x08, 0x08],
        pg_track_log_min_addr_space: u8 = [0x10, 0x08],
        pg_track_log_max_addr_space: u8 = [0x18, 0x08],
        reserved_at_20: u8 = [0x20, 0x03],
        pg_track_log_min_msg_size: u8 = [0x23, 0x05],
        reserved_at_28: u8 = [0x28, 0x03],
        pg_track_log_max_msg_size: u8 = [0x2b, 0x05],
        reserved_at_30: u8 = [0x30, 0x03],
        pg_track_log_min_page_size: u8 = [0x33, 0x05],
        reserved_at_38: u8 = [0x38, 0x03],
        pg_track_log_max_page_size: u8 = [0x3b, 0x05],
        reserved_at_40: Reserved = [0x40, 0x7c0],
    }
}

layout! {
    /// `page_track`: the object context (fixed part; `track_range[]`
    /// follows).
    pub mod page_track: LayoutKind::Context, 48 bytes, tiled {
        modify_field_select: u64 = [0x00, 0x40],
        reserved_at_40: u16 = [0x40, 0x10],
        vhca_id: u16 = [0x50, 0x10],
        reserved_at_60: u32 = [0x60, 0x20],
        state: u8 = [0x80, 0x04],
        track_type: u8 = [0x84, 0x04],
        log_addr_space_size: u8 = [0x88, 0x08],
        reserved_at_90: u8 = [0x90, 0x03],
        log_page_size: u8 = [0x93, 0x05],
        reserved_at_98: u8 = [0x98, 0x03],
        log_msg_size: u8 = [0x9b, 0x05],
        reserved_at_a0: u8 = [0xa0, 0x08],
        reporting_qpn: u32 = [0xa8, 0x18],
        reserved_at_c0: u32 = [0xc0, 0x18],
        num_ranges: u8 = [0xd8, 0x08],
        reserved_at_e0: u32 = [0xe0, 0x20],
        range_start_address: u64 = [0x100, 0x40],
        length: u64 = [0x140, 0x40],
    }
    tail track_range [128] at 48
}

layout! {
    /// `page_track_range`: one tracked range.
    pub mod page_track_range: LayoutKind::Context, 16 bytes, tiled {
        start_address: u64 = [0x00, 0x40],
        length: u64 = [0x40, 0x40],
    }
}

layout! {
    /// `page_track_report_entry`: one dirty page, by address.
    pub mod page_track_report_entry: LayoutKind::Context, 8 bytes, tiled {
        dirty_address_high: u32 = [0x00, 0x20],
        dirty_address_low: u32 = [0x20, 0x20],
    }
}

// CREATE and MODIFY inputs are `general_obj_in_cmd_hdr` followed by the
// `page_track` context at byte 16; the context's members appear here at
// their offset plus 0x80, named as in `page_track` (flattened, so no
// `nested` entry: tools would list every member twice).
layout! {
    /// `create_page_track_obj_in`: 64 fixed bytes, then `num_ranges`
    /// `page_track_range`s.
    pub mod create_page_track_obj_in: LayoutKind::Input { opcode: 0xa00 }, 64 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        uid: u16 = [0x10, 0x10],
        vhca_tunnel_id: u16 = [0x20, 0x10],
        obj_type: u16 = [0x30, 0x10],
        obj_id: u32 = [0x40, 0x20],
        reserved_at_60: u32 = [0x60, 0x20],
        modify_field_select: u64 = [0x80, 0x40],
        reserved_at_c0: u16 = [0xc0, 0x10],
        vhca_id: u16 = [0xd0, 0x10],
        reserved_at_e0: u32 = [0xe0, 0x20],
        state: u8 = [0x100, 0x04],
        track_type: u8 = [0x104, 0x04],
        log_addr_space_size: u8 = [0x108, 0x08],
        reserved_at_110: u8 = [0x110, 0x03],
        log_page_size: u8 = [0x113, 0x05],
        reserved_at_118: u8 = [0x118, 0x03],
        log_msg_size: u8 = [0x11b, 0x05],
        reserved_at_120: u8 = [0x120, 0x08],
        reporting_qpn: u32 = [0x128, 0x18],
        reserved_at_140: u32 = [0x140, 0x18],
        num_ranges: u8 = [0x158, 0x08],
        reserved_at_160: u32 = [0x160, 0x20],
        range_start_address: u64 = [0x180, 0x40],
        length: u64 = [0x1c0, 0x40],
    }
    tail track_range [128] at 64
}

layout! {
    /// `modify_page_track_obj_in`: the same shape, no ranges.
    pub mod modify_page_track_obj_in: LayoutKind::Input { opcode: 0xa01 }, 64 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        uid: u16 = [0x10, 0x10],
        vhca_tunnel_id: u16 = [0x20, 0x10],
        obj_type: u16 = [0x30, 0x10],
        obj_id: u32 = [0x40, 0x20],
        reserved_at_60: u32 = [0x60, 0x20],
        modify_field_select: u64 = [0x80, 0x40],
        reserved_at_c0: u16 = [0xc0, 0x10],
        vhca_id: u16 = [0xd0, 0x10],
        reserved_at_e0: u32 = [0xe0, 0x20],
        state: u8 = [0x100, 0x04],
        track_type: u8 = [0x104, 0x04],
        log_addr_space_size: u8 = [0x108, 0x08],
        reserved_at_110: u8 = [0x110, 0x03],
        log_page_size: u8 = [0x113, 0x05],
        reserved_at_118: u8 = [0x118, 0x03],
        log_msg_size: u8 = [0x11b, 0x05],
        reserved_at_120: u8 = [0x120, 0x08],
        reporting_qpn: u32 = [0x128, 0x18],
        reserved_at_140: u32 = [0x140, 0x18],
        num_ranges: u8 = [0x158, 0x08],
        reserved_at_160: u32 = [0x160, 0x20],
        range_start_address: u64 = [0x180, 0x40],
        length: u64 = [0x1c0, 0x40],
    }
}

layout! {
    /// QUERY_GENERAL_OBJECT's input for a tracker (Linux sends a bare
    /// `general_obj_in_cmd_hdr` with opcode 0xa02).
    pub mod query_page_track_obj_in: LayoutKind::Input { opcode: 0xa02 }, 16 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        uid: u16 = [0x10, 0x10],
        vhca_tunnel_id: u16 = [0x20, 0x10],
        obj_type: u16 = [0x30, 0x10],
        obj_id: u32 = [0x40, 0x20],
        reserved_at_60: u32 = [0x60, 0x20],
    }
}

layout! {
    /// DESTROY_GENERAL_OBJECT's input for a tracker (a bare
    /// `general_obj_in_cmd_hdr` with opcode 0xa03).
    pub mod destroy_page_track_obj_in: LayoutKind::Input { opcode: 0xa03 }, 16 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        uid: u16 = [0x10, 0x10],
        vhca_tunnel_id: u16 = [0x20, 0x10],
        obj_type: u16 = [0x30, 0x10],
        obj_id: u32 = [0x40, 0x20],
        reserved_at_60: u32 = [0x60, 0x20],
    }
}

layout! {
    /// `general_obj_out_cmd_hdr`: CREATE returns the object id here.
    pub mod general_obj_out_cmd_hdr: LayoutKind::Output, 16 bytes, tiled {
        status: u8 = [0x00, 0x08],
        reserved_at_8: u32 = [0x08, 0x18],
        syndrome: u32 = [0x20, 0x20],
        obj_id: u32 = [0x40, 0x20],
        reserved_at_60: u32 = [0x60, 0x20],
    }
}

layout! {
    /// `query_page_track_obj_out`: the header, then the context at byte 16.
    pub mod query_page_track_obj_out: LayoutKind::Output, 64 bytes, tiled {
        status: u8 = [0x00, 0x08],
        reserved_at_8: u32 = [0x08, 0x18],
        syndrome: u32 = [0x20, 0x20],
        obj_id: u32 = [0x40, 0x20],
        reserved_at_60: u32 = [0x60, 0x20],
        obj_context: Reserved = [0x80, 0x180],
    }
    nested { obj_context: super::page_track::LAYOUT = 0x80 }
}

layout! {
    /// The `mlx5_cqe64` members a report CQE carries (rdma-core's names):
    /// the tracker state in the immediate's top nibble, the message length,
    /// the receive slot and the opcode/owner byte.
    pub mod cqe64: LayoutKind::Context, 64 bytes, sparse {
        imm_inval_pkey: u32 = [0x120, 0x20],
        byte_cnt: u32 = [0x160, 0x20],
        wqe_counter: u16 = [0x1e0, 0x10],
        signature: u8 = [0x1f0, 0x08],
        op_own: u8 = [0x1f8, 0x08],
    }
}

/// Byte offset of the object context in CREATE/MODIFY inputs and QUERY output.
pub const OBJ_CONTEXT_OFFSET: usize = 16;

enum_with_unknown! {
    /// The tracker object's state (`MLX5_PAGE_TRACK_STATE_*`).
    pub enum TrackerState(u8) {
        /// Tracking writes; no report running.
        Tracking = 0 => "TRACKING",
        /// A report is being delivered.
        Reporting = 1 => "REPORTING",
        /// The tracker failed; what it tracked is lost.
        Error = 2 => "ERROR",
    }
}

/// The tracker limits the device reports (`adv_virtualization_cap`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AdvVirtualizationCaps {
    /// log2 of the number of trackers (not used by Linux).
    pub pg_track_log_max_num: u8,
    /// Ranges one tracker can hold; more are combined.
    pub pg_track_max_num_range: u8,
    /// Smallest `log_addr_space_size` accepted.
    pub pg_track_log_min_addr_space: u8,
    /// Largest `log_addr_space_size` accepted.
    pub pg_track_log_max_addr_space: u8,
    /// log2 of the smallest report message.
    pub pg_track_log_min_msg_size: u8,
    /// log2 of the largest report message.
    pub pg_track_log_max_msg_size: u8,
    /// log2 of the smallest tracked page.
    pub pg_track_log_min_page_size: u8,
    /// log2 of the largest tracked page.
    pub pg_track_log_max_page_size: u8,
}

impl AdvVirtualizationCaps {
    /// Parses the capability page (from byte 16 of QUERY_HCA_CAP's output).
    ///
    /// # Errors
    /// When `cap` is too short.
    pub fn parse(cap: &[u8]) -> Result<Self, FieldError> {
        Checked::new(cap).map(Self::from_checked)
    }

    /// Reads the members from a checked page.
    pub fn from_checked(cap: Checked<'_, adv_virtualization_cap::Bits>) -> Self {
        use adv_virtualization_cap as f;
        Self {
            pg_track_log_max_num: cap.get(f::pg_track_log_max_num),
            pg_track_max_num_range: cap.get(f::pg_track_max_num_range),
            pg_track_log_min_addr_space: cap.get(f::pg_track_log_min_addr_space),
            pg_track_log_max_addr_space: cap.get(f::pg_track_log_max_addr_space),
            pg_track_log_min_msg_size: cap.get(f::pg_track_log_min_msg_size),
            pg_track_log_max_msg_size: cap.get(f::pg_track_log_max_msg_size),
            pg_track_log_min_page_size: cap.get(f::pg_track_log_min_page_size),
            pg_track_log_max_page_size: cap.get(f::pg_track_log_max_page_size),
        }
    }

    /// Writes the members into a capability page (for simulators and tests).
    ///
    /// # Errors
    /// When `cap` is too short or a value is wider than its field.
    pub fn emit(&self, cap: &mut [u8]) -> Result<(), FieldError> {
        use adv_virtualization_cap as f;
        let mut c = CheckedMut::<f::Bits>::new(cap)?;
        c.set(f::pg_track_log_max_num, self.pg_track_log_max_num)?;
        c.set(f::pg_track_max_num_range, self.pg_track_max_num_range)?;
        c.set(
            f::pg_track_log_min_addr_space,
            self.pg_track_log_min_addr_space,
        )?;
        c.set(
            f::pg_track_log_max_addr_space,
            self.pg_track_log_max_addr_space,
        )?;
        c.set(f::pg_track_log_min_msg_size, self.pg_track_log_min_msg_size)?;
        c.set(f::pg_track_log_max_msg_size, self.pg_track_log_max_msg_size)?;
        c.set(
            f::pg_track_log_min_page_size,
            self.pg_track_log_min_page_size,
        )?;
        c.set(
            f::pg_track_log_max_page_size,
            self.pg_track_log_max_page_size,
        )
    }
}

/// QUERY_HCA_CAP of the PF's own `adv_virtualization_cap` page (op_mod
/// 0x4c for MAX, 0x4d for CUR). A command of its own rather than a
/// [`CapType`](super::hca_cap::CapType) so the migration probe's types stay
/// as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryAdvVirtualizationCap {
    /// Maximum or current values (Linux reads CUR).
    pub mode: CapMode,
}

impl Command for QueryAdvVirtualizationCap {
    const OPCODE: Opcode = Opcode::QueryHcaCap;
    type In = query_hca_cap_in::Bits;
    type Out = query_hca_cap_out::Bits;
    type Output = AdvVirtualizationCaps;

    fn op_mod(&self) -> u16 {
        let mode = match self.mode {
            CapMode::Max => 0,
            CapMode::Current => 1,
        };
        (CAP_TYPE_ADV_VIRTUALIZATION << 1) | mode
    }
    fn encode_fields(&self, _input: &mut CheckedMut<'_, Self::In>) -> Result<(), EncodeError> {
        Ok(())
    }
    fn decode_fields(&self, out: Checked<'_, Self::Out>) -> AdvVirtualizationCaps {
        AdvVirtualizationCaps::from_checked(
            out.nested::<adv_virtualization_cap::Bits, CAPABILITY_OFFSET>(),
        )
    }
}

/// A tracker object, as CREATE named it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TrackerId(pub u32);

/// One tracked range: `[start_address, start_address + length)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TrackRange {
    /// First byte.
    pub start_address: u64,
    /// Bytes (never 0).
    pub length: u64,
}

/// CREATE_GENERAL_OBJECT for a page tracker. Its input has a variable
/// length (16 bytes per range), so it has no [`Command`] impl; the table's
/// opcode is checked in `ifc/mod.rs` as CREATE_MKEY's is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreatePageTrack<'a> {
    /// The tracked VF.
    pub vhca_id: u16,
    /// log2 of the address space the ranges span (see the tracker plan).
    pub log_addr_space_size: u8,
    /// log2 of the tracked page.
    pub log_page_size: u8,
    /// log2 of the report message.
    pub log_msg_size: u8,
    /// The firmware-side QP that sends reports.
    pub reporting_qpn: u32,
    /// The ranges (at most [`MAX_TRACK_RANGES`]).
    pub ranges: &'a [TrackRange],
}

impl CreatePageTrack<'_> {
    /// Bytes of the input.
    pub const fn in_len(&self) -> usize {
        create_page_track_obj_in::SIZE
            .saturating_add(self.ranges.len().saturating_mul(TRACK_RANGE_LEN))
    }

    /// Writes the input into `buf` and returns its length.
    ///
    /// # Errors
    /// [`EncodeError::InsufficientSize`] (nothing written) or
    /// [`EncodeError::ValueTooWide`] (too many ranges, a wide QPN or size).
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        use create_page_track_obj_in as f;
        let num_ranges =
            u8::try_from(self.ranges.len()).map_err(|_| EncodeError::ValueTooWide {
                field: "num_ranges",
                // CAST: usize to u64 never loses bits on our targets.
                value: self.ranges.len() as u64,
            })?;
        let len = self.in_len();
        let dst = buf
            .get_mut(..len)
            .ok_or(EncodeError::InsufficientSize { required: len })?;
        dst.fill(0);
        write_in_header(dst, Opcode::CreateGeneralObject, OBJ_TYPE_PAGE_TRACK)?;
        let (fixed, tail) = dst.split_at_mut(f::SIZE.min(len));
        let mut input = CheckedMut::<f::Bits>::new(fixed)?;
        input.set(f::vhca_id, self.vhca_id)?;
        input.set(f::track_type, TRACK_TYPE)?;
        input.set(f::log_addr_space_size, self.log_addr_space_size)?;
        input.set(f::log_page_size, self.log_page_size)?;
        input.set(f::log_msg_size, self.log_msg_size)?;
        input.set(f::reporting_qpn, self.reporting_qpn)?;
        input.set(f::num_ranges, num_ranges)?;
        for (range, out) in self
            .ranges
            .iter()
            .zip(tail.chunks_exact_mut(TRACK_RANGE_LEN))
        {
            let mut r = CheckedMut::<page_track_range::Bits>::new(out)?;
            r.set(page_track_range::start_address, range.start_address)?;
            r.set(page_track_range::length, range.length)?;
        }
        Ok(len)
    }

    /// Reads the new tracker's id from CREATE's output.
    ///
    /// # Errors
    /// A short output or a non-OK status.
    pub fn decode(out: &[u8]) -> Result<TrackerId, DecodeError> {
        let out = checked_output::<general_obj_out_cmd_hdr::Bits>(
            Opcode::CreateGeneralObject,
            OBJ_TYPE_PAGE_TRACK,
            out,
        )?;
        Ok(TrackerId(out.get(general_obj_out_cmd_hdr::obj_id)))
    }
}

/// MODIFY_GENERAL_OBJECT: report (and clear) the dirty pages of
/// `[iova, iova + length)`; firmware moves the tracker to REPORTING.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModifyPageTrack {
    /// The tracker.
    pub tracker: TrackerId,
    /// First byte to report.
    pub iova: u64,
    /// Bytes to report.
    pub length: u64,
}

impl Command for ModifyPageTrack {
    const OPCODE: Opcode = Opcode::ModifyGeneralObject;
    type In = modify_page_track_obj_in::Bits;
    type Out = general_obj_out_cmd_hdr::Bits;
    type Output = ();

    fn op_mod(&self) -> u16 {
        OBJ_TYPE_PAGE_TRACK
    }
    fn encode_fields(&self, input: &mut CheckedMut<'_, Self::In>) -> Result<(), EncodeError> {
        use modify_page_track_obj_in as f;
        input.set(f::obj_id, self.tracker.0)?;
        input.set(f::modify_field_select, MODIFY_SELECT_RANGE_AND_STATE)?;
        input.set(f::range_start_address, self.iova)?;
        input.set(f::length, self.length)?;
        Ok(input.set(f::state, u8::from(TrackerState::Reporting))?)
    }
    fn decode_fields(&self, _out: Checked<'_, Self::Out>) {}
}

/// QUERY_GENERAL_OBJECT: the tracker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryPageTrack {
    /// The tracker.
    pub tracker: TrackerId,
}

impl Command for QueryPageTrack {
    const OPCODE: Opcode = Opcode::QueryGeneralObject;
    type In = query_page_track_obj_in::Bits;
    type Out = query_page_track_obj_out::Bits;
    type Output = TrackerState;

    fn op_mod(&self) -> u16 {
        OBJ_TYPE_PAGE_TRACK
    }
    fn encode_fields(&self, input: &mut CheckedMut<'_, Self::In>) -> Result<(), EncodeError> {
        Ok(input.set(query_page_track_obj_in::obj_id, self.tracker.0)?)
    }
    fn decode_fields(&self, out: Checked<'_, Self::Out>) -> TrackerState {
        let ctx = out.nested::<page_track::Bits, OBJ_CONTEXT_OFFSET>();
        TrackerState::from(ctx.get(page_track::state))
    }
}

/// DESTROY_GENERAL_OBJECT for a tracker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestroyPageTrack {
    /// The tracker.
    pub tracker: TrackerId,
}

impl Command for DestroyPageTrack {
    const OPCODE: Opcode = Opcode::DestroyGeneralObject;
    type In = destroy_page_track_obj_in::Bits;
    type Out = general_obj_out_cmd_hdr::Bits;
    type Output = ();

    fn op_mod(&self) -> u16 {
        OBJ_TYPE_PAGE_TRACK
    }
    fn encode_fields(&self, input: &mut CheckedMut<'_, Self::In>) -> Result<(), EncodeError> {
        Ok(input.set(destroy_page_track_obj_in::obj_id, self.tracker.0)?)
    }
    fn decode_fields(&self, _out: Checked<'_, Self::Out>) {}
}

/// What a report CQE says, decoded but not yet judged (the tracker engine
/// checks it against the channel it expects).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReportCqe {
    /// `op_own` bits 7..4.
    pub opcode: u8,
    /// `op_own` bit 0.
    pub owner: bool,
    /// Message bytes.
    pub byte_cnt: u32,
    /// The receive WQE it consumed (masked by the ring size to a slot).
    pub wqe_counter: u16,
    /// The tracker's state after this message (immediate bits 31..28).
    pub state: TrackerState,
}

impl ReportCqe {
    /// Decodes a 64-byte CQE.
    ///
    /// # Errors
    /// When `cqe` is shorter than [`CQE_LEN`].
    pub fn parse(cqe: &[u8]) -> Result<Self, FieldError> {
        let c = Checked::<cqe64::Bits>::new(cqe)?;
        let op_own = c.get(cqe64::op_own);
        // CAST: the immediate's top nibble fits u8.
        let state = (c.get(cqe64::imm_inval_pkey) >> 28) as u8;
        Ok(Self {
            opcode: op_own >> 4,
            owner: op_own & 1 == 1,
            byte_cnt: c.get(cqe64::byte_cnt),
            wqe_counter: c.get(cqe64::wqe_counter),
            state: TrackerState::from(state),
        })
    }

    /// Encodes a CQE (simulators, tests, fuzz seeds). Other bytes stay.
    ///
    /// # Errors
    /// When `cqe` is shorter than [`CQE_LEN`].
    pub fn emit(&self, cqe: &mut [u8]) -> Result<(), FieldError> {
        let mut c = CheckedMut::<cqe64::Bits>::new(cqe)?;
        c.set(cqe64::op_own, (self.opcode << 4) | u8::from(self.owner))?;
        c.set(
            cqe64::imm_inval_pkey,
            u32::from(u8::from(self.state) & 0xf) << 28,
        )?;
        c.set(cqe64::byte_cnt, self.byte_cnt)?;
        c.set(cqe64::wqe_counter, self.wqe_counter)
    }
}

#[cfg(test)]
mod tests;
