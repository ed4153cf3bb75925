//! The sim's own field table for the page tracker (from
//! `reference/page-tracker.md` §1–3; deliberately not `mlx5vf-core`'s).

use crate::wire::{Field, Field64};

/// `obj_type` (where other commands have op_mod).
pub(crate) const OBJ_TYPE: Field = Field::new(0x30, 16);
/// `obj_id` of the input header.
pub(crate) const OBJ_ID: Field = Field::new(0x40, 32);
/// `obj_id` of the output header (CREATE's new id).
pub(crate) const OUT_OBJ_ID: Field = Field::new(0x40, 32);
/// `MLX5_OBJ_TYPE_PAGE_TRACK`.
pub(crate) const OBJ_TYPE_PAGE_TRACK: u32 = 0x46;

/// The context starts at bit 0x80 of CREATE/MODIFY input and QUERY output.
const CTX: usize = 0x80;
/// `modify_field_select` (64 bits).
pub(crate) const MODIFY_FIELD_SELECT: Field64 = Field64::at_bit(CTX);
/// `vhca_id`.
pub(crate) const VHCA_ID: Field = Field::new(CTX + 0x50, 16);
/// `state`.
pub(crate) const STATE: Field = Field::new(CTX + 0x80, 4);
/// `track_type`.
pub(crate) const TRACK_TYPE: Field = Field::new(CTX + 0x84, 4);
/// `log_addr_space_size`.
pub(crate) const LOG_ADDR_SPACE_SIZE: Field = Field::new(CTX + 0x88, 8);
/// `log_page_size`.
pub(crate) const LOG_PAGE_SIZE: Field = Field::new(CTX + 0x93, 5);
/// `log_msg_size`.
pub(crate) const LOG_MSG_SIZE: Field = Field::new(CTX + 0x9b, 5);
/// `reporting_qpn`.
pub(crate) const REPORTING_QPN: Field = Field::new(CTX + 0xa8, 24);
/// `num_ranges`.
pub(crate) const NUM_RANGES: Field = Field::new(CTX + 0xd8, 8);
/// `range_start_address`.
pub(crate) const RANGE_START_ADDRESS: Field64 = Field64::at_bit(CTX + 0x100);
/// `length`.
pub(crate) const LENGTH: Field64 = Field64::at_bit(CTX + 0x140);
/// Byte of `track_range[0]`; 16 bytes each (start, length).
pub(crate) const RANGES_BYTE: usize = 64;
/// Fixed input size of CREATE and MODIFY.
pub(crate) const IN_LEN: usize = 64;
/// QUERY output size.
pub(crate) const QUERY_OUT_LEN: usize = 64;
/// Header-only input / output size.
pub(crate) const HDR_LEN: usize = 16;

/// `adv_virtualization_cap` members (offsets inside the capability).
pub(crate) mod cap {
    use crate::wire::Field;
    /// cap_type in QUERY_HCA_CAP's op_mod.
    pub(crate) const CAP_TYPE: u16 = 0x26;
    /// `pg_track_max_num_range`.
    pub(crate) const MAX_NUM_RANGE: Field = Field::new(0x08, 8);
    /// `pg_track_log_min_addr_space`.
    pub(crate) const LOG_MIN_ADDR_SPACE: Field = Field::new(0x10, 8);
    /// `pg_track_log_max_addr_space`.
    pub(crate) const LOG_MAX_ADDR_SPACE: Field = Field::new(0x18, 8);
    /// `pg_track_log_min_msg_size`.
    pub(crate) const LOG_MIN_MSG: Field = Field::new(0x23, 5);
    /// `pg_track_log_max_msg_size`.
    pub(crate) const LOG_MAX_MSG: Field = Field::new(0x2b, 5);
    /// `pg_track_log_min_page_size`.
    pub(crate) const LOG_MIN_PAGE: Field = Field::new(0x33, 5);
    /// `pg_track_log_max_page_size`.
    pub(crate) const LOG_MAX_PAGE: Field = Field::new(0x3b, 5);
}

/// CQE64 byte offsets (rdma-core `mlx5_cqe64`).
pub(crate) mod cqe {
    /// Immediate (state in bits 31..28).
    pub(crate) const IMM: usize = 36;
    /// Message bytes.
    pub(crate) const BYTE_CNT: usize = 44;
    /// Consumed WQE counter.
    pub(crate) const WQE_COUNTER: usize = 60;
    /// Opcode (7..4) and owner (0).
    pub(crate) const OP_OWN: usize = 63;
    /// `MLX5_CQE_RESP_SEND_IMM`.
    pub(crate) const RESP_SEND_IMM: u8 = 3;
}
