//! The sim's own view of the mlx5 command layouts: big-endian bit-field
//! accessors, the field table of every command it answers, opcodes and
//! status codes.
//!
//! This is deliberately *not* shared with `mlx5vf-core`: the sim decodes
//! commands with its own table, written from `reference/mlx5-ifc.md` §1–3, so
//! a layout mistake in the driver shows up as a refused command instead of
//! being mirrored.
//!
//! # Bit convention
//! Offsets follow `mlx5_ifc.h`: bit 0 is the most significant bit of byte 0,
//! dword `d` holds bits `32d..32d+31`. A field of width `w ≤ 32` at bit `b`
//! never crosses a dword and reads as
//! `(be32(dword b/32) >> (32 - b%32 - w)) & mask(w)`. 64-bit fields are plain
//! big-endian `u64`s at byte `b/8` ([`Field64`]).
//!
//! # No-panic contract
//! Every accessor here is total: reading beyond the end of a buffer sees zero
//! bytes and writing beyond it is dropped. Command handlers check the buffer
//! length against the command's size *before* decoding, so in practice the
//! out-of-range paths are never taken; they exist so that a mistake cannot
//! become a panic.

/// A bit field of 1 to 32 bits that does not cross a dword boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Offset of the field's most significant bit, in `mlx5_ifc` bits.
    pub bit: usize,
    /// Width in bits (1..=32).
    pub width: u32,
}

impl Field {
    /// A field at `bit` of `width` bits.
    ///
    /// # Panics
    /// At compile time (every field is a `const`) when the width is not in
    /// 1..=32 or the field would cross a dword.
    #[must_use]
    #[allow(clippy::arithmetic_side_effects)] // const evaluation: overflow is a compile error
    pub const fn new(bit: usize, width: u32) -> Self {
        assert!(width >= 1 && width <= 32, "field width must be 1..=32");
        // CAST: width ≤ 32 (checked just above).
        assert!(bit % 32 + width as usize <= 32, "field crosses a dword");
        Self { bit, width }
    }

    /// The same field inside a sub-structure that starts at `base_bit`.
    #[must_use]
    #[allow(clippy::arithmetic_side_effects)] // const evaluation: overflow is a compile error
    pub const fn within(self, base_bit: usize) -> Self {
        Self::new(base_bit + self.bit, self.width)
    }

    /// Read the field from `buf` (zero past the end of `buf`).
    #[must_use]
    pub fn get(self, buf: &[u8]) -> u32 {
        get_bits(buf, self.bit, self.width)
    }

    /// Write `value` (truncated to the field width) into `buf`.
    pub fn set(self, buf: &mut [u8], value: u32) {
        set_bits(buf, self.bit, self.width, value);
    }

    /// Read a one-bit field as a flag.
    #[must_use]
    pub fn flag(self, buf: &[u8]) -> bool {
        self.get(buf) != 0
    }
}

/// A big-endian 64-bit field at a byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field64 {
    /// Byte offset of the field (its bit offset divided by 8).
    pub byte: usize,
}

impl Field64 {
    /// A 64-bit field at `mlx5_ifc` bit `bit` (must be a multiple of 64).
    ///
    /// # Panics
    /// At compile time when `bit` is not 64-bit aligned.
    #[must_use]
    pub const fn at_bit(bit: usize) -> Self {
        assert!(bit % 64 == 0, "64-bit fields are 64-bit aligned");
        Self { byte: bit / 8 }
    }

    /// Read the field (zero bytes past the end of `buf`).
    #[must_use]
    pub fn get(self, buf: &[u8]) -> u64 {
        be64(buf, self.byte)
    }

    /// Write the field (bytes past the end of `buf` are dropped).
    pub fn set(self, buf: &mut [u8], value: u64) {
        put_be64(buf, self.byte, value);
    }
}

/// Mask of the low `width` bits (`width` ≤ 32).
fn low_mask(width: u32) -> u32 {
    u32::MAX
        .checked_shr(32u32.saturating_sub(width))
        .unwrap_or(0)
}

/// Read a field of `width` bits at `bit_off`; bytes past the end read as 0.
///
/// A field that crosses a dword (not produced by [`Field::new`]) reads as
/// its part inside the first dword.
#[must_use]
pub fn get_bits(buf: &[u8], bit_off: usize, width: u32) -> u32 {
    let dword_byte = (bit_off / 32).saturating_mul(4);
    // CAST: `bit_off % 32` < 32.
    let in_dword = (bit_off % 32) as u32;
    let shift = 32u32.saturating_sub(in_dword).saturating_sub(width);
    be32(buf, dword_byte).checked_shr(shift).unwrap_or(0) & low_mask(width)
}

/// Write `value` into a field of `width` bits at `bit_off`, leaving the other
/// bits of the dword untouched; a field past the end of `buf` is dropped.
pub fn set_bits(buf: &mut [u8], bit_off: usize, width: u32, value: u32) {
    let dword_byte = (bit_off / 32).saturating_mul(4);
    // CAST: `bit_off % 32` < 32.
    let in_dword = (bit_off % 32) as u32;
    let shift = 32u32.saturating_sub(in_dword).saturating_sub(width);
    let mask = low_mask(width).checked_shl(shift).unwrap_or(0);
    let old = be32(buf, dword_byte);
    let new = (old & !mask) | (value.checked_shl(shift).unwrap_or(0) & mask);
    put_be32(buf, dword_byte, new);
}

/// Big-endian `u32` at byte `off`; missing bytes read as 0.
#[must_use]
pub fn be32(buf: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    for (i, slot) in b.iter_mut().enumerate() {
        *slot = off
            .checked_add(i)
            .and_then(|at| buf.get(at))
            .copied()
            .unwrap_or(0);
    }
    u32::from_be_bytes(b)
}

/// Big-endian `u64` at byte `off`; missing bytes read as 0.
#[must_use]
pub fn be64(buf: &[u8], off: usize) -> u64 {
    let hi = u64::from(be32(buf, off));
    let lo = u64::from(be32(buf, off.saturating_add(4)));
    (hi << 32) | lo
}

/// Store a big-endian `u32` at byte `off`; bytes past the end are dropped.
pub fn put_be32(buf: &mut [u8], off: usize, value: u32) {
    for (i, byte) in value.to_be_bytes().into_iter().enumerate() {
        if let Some(slot) = off.checked_add(i).and_then(|at| buf.get_mut(at)) {
            *slot = byte;
        }
    }
}

/// Store a big-endian `u64` at byte `off`; bytes past the end are dropped.
pub fn put_be64(buf: &mut [u8], off: usize, value: u64) {
    // CAST: the two halves of a u64, each fits u32.
    put_be32(buf, off, (value >> 32) as u32);
    put_be32(buf, off.saturating_add(4), value as u32);
}

/// Firmware opcodes (`mlx5-ifc.md` §1) the sim answers.
pub mod opcode {
    /// QUERY_HCA_CAP.
    pub const QUERY_HCA_CAP: u16 = 0x100;
    /// CREATE_MKEY.
    pub const CREATE_MKEY: u16 = 0x200;
    /// DESTROY_MKEY.
    pub const DESTROY_MKEY: u16 = 0x202;
    /// SUSPEND_VHCA.
    pub const SUSPEND_VHCA: u16 = 0x115;
    /// RESUME_VHCA.
    pub const RESUME_VHCA: u16 = 0x116;
    /// QUERY_VHCA_MIGRATION_STATE.
    pub const QUERY_VHCA_MIGRATION_STATE: u16 = 0x117;
    /// SAVE_VHCA_STATE.
    pub const SAVE_VHCA_STATE: u16 = 0x118;
    /// LOAD_VHCA_STATE.
    pub const LOAD_VHCA_STATE: u16 = 0x119;
    /// ALLOC_PD.
    pub const ALLOC_PD: u16 = 0x800;
    /// DEALLOC_PD.
    pub const DEALLOC_PD: u16 = 0x801;
    /// CREATE_GENERAL_OBJECT (page tracker).
    pub const CREATE_GENERAL_OBJECT: u16 = 0xa00;
    /// MODIFY_GENERAL_OBJECT (page tracker).
    pub const MODIFY_GENERAL_OBJECT: u16 = 0xa01;
    /// QUERY_GENERAL_OBJECT (page tracker).
    pub const QUERY_GENERAL_OBJECT: u16 = 0xa02;
    /// DESTROY_GENERAL_OBJECT (page tracker).
    pub const DESTROY_GENERAL_OBJECT: u16 = 0xa03;

    /// Every opcode the sim implements, in a fixed order (the index of an
    /// opcode here is its slot in the per-opcode command counters).
    pub const ALL: [u16; 14] = [
        QUERY_HCA_CAP,
        CREATE_MKEY,
        DESTROY_MKEY,
        SUSPEND_VHCA,
        RESUME_VHCA,
        QUERY_VHCA_MIGRATION_STATE,
        SAVE_VHCA_STATE,
        LOAD_VHCA_STATE,
        ALLOC_PD,
        DEALLOC_PD,
        CREATE_GENERAL_OBJECT,
        MODIFY_GENERAL_OBJECT,
        QUERY_GENERAL_OBJECT,
        DESTROY_GENERAL_OBJECT,
    ];
}

/// Command status codes (`mlx5-ifc.md` §3), byte 0 of every output.
pub mod status {
    /// Success.
    pub const OK: u8 = 0x00;
    /// Internal error (the sim uses it for DMA faults).
    pub const INT_ERR: u8 = 0x01;
    /// Unknown opcode.
    pub const BAD_OP_ERR: u8 = 0x02;
    /// Bad parameter (op_mod, reserved bits, unknown object, bad image...).
    pub const BAD_PARAM_ERR: u8 = 0x03;
    /// Bad system state.
    pub const BAD_SYS_STATE_ERR: u8 = 0x04;
    /// Bad resource.
    pub const BAD_RES_ERR: u8 = 0x05;
    /// Resource busy (DEALLOC_PD while mkeys use it).
    pub const RES_BUSY: u8 = 0x06;
    /// Limits exceeded (sim capacity).
    pub const LIM_ERR: u8 = 0x08;
    /// Resource in the wrong state (VHCA state machine, save/load rules).
    pub const BAD_RES_STATE_ERR: u8 = 0x09;
    /// Input shorter than the command needs.
    pub const BAD_INP_LEN_ERR: u8 = 0x50;
    /// Output shorter than the command's `_out` structure.
    pub const BAD_OUTP_LEN_ERR: u8 = 0x51;
}

/// Command header fields shared by every `_in` / `_out` structure.
pub mod hdr {
    use super::Field;
    /// `_in.opcode`.
    pub const OPCODE: Field = Field::new(0x00, 16);
    /// `_in.uid` (DEVX user context; the sim supports only 0).
    pub const UID: Field = Field::new(0x10, 16);
    /// `_in.op_mod`.
    pub const OP_MOD: Field = Field::new(0x30, 16);
    /// `_out.status`.
    pub const STATUS: Field = Field::new(0x00, 8);
    /// `_out.syndrome`.
    pub const SYNDROME: Field = Field::new(0x20, 32);
    /// Size of the smallest `_in` and `_out` (the inline part of a command).
    pub const LEN: usize = 16;
}

/// QUERY_HCA_CAP (`query_hca_cap_in` / `_out`).
pub mod query_hca_cap {
    use super::Field;
    /// `other_function`: query a VF's caps instead of the PF's own.
    pub const OTHER_FUNCTION: Field = Field::new(0x40, 1);
    /// `ec_vf_function` (embedded-CPU VFs; not modelled).
    pub const EC_VF_FUNCTION: Field = Field::new(0x41, 1);
    /// `function_id`: 0 = PF, n + 1 = VF n.
    pub const FUNCTION_ID: Field = Field::new(0x50, 16);
    /// `_in` size.
    pub const IN_LEN: usize = 16;
    /// `_out` size (16-byte header + 4096-byte capability union).
    pub const OUT_LEN: usize = 4112;
    /// Byte offset of the capability union in the output.
    pub const CAP_BYTE: usize = 16;
    /// cap_type GENERAL (op_mod `0 << 1 | mode`).
    pub const CAP_GENERAL: u16 = 0x00;
    /// cap_type GENERAL_2 (op_mod `0x20 << 1 | mode`).
    pub const CAP_GENERAL_2: u16 = 0x20;
}

/// Fields of `cmd_hca_cap` (offsets inside the capability union).
pub mod cmd_hca_cap {
    use super::Field;
    /// `hca_cap_2`: GENERAL_2 caps exist.
    pub const HCA_CAP_2: Field = Field::new(0x20, 1);
    /// `vhca_id`.
    pub const VHCA_ID: Field = Field::new(0x30, 16);
    /// `adv_virtualization`.
    pub const ADV_VIRTUALIZATION: Field = Field::new(0x579, 1);
    /// `migration`.
    pub const MIGRATION: Field = Field::new(0x68d, 1);
}

/// Fields of `cmd_hca_cap_2` (offsets inside the capability union).
pub mod cmd_hca_cap_2 {
    use super::Field;
    /// `migratable`.
    pub const MIGRATABLE: Field = Field::new(0x80, 1);
    /// `migration_multi_load`.
    pub const MIGRATION_MULTI_LOAD: Field = Field::new(0xc8, 1);
    /// `migration_tracking_state`.
    pub const MIGRATION_TRACKING_STATE: Field = Field::new(0xc9, 1);
    /// `migration_in_chunks`.
    pub const MIGRATION_IN_CHUNKS: Field = Field::new(0xd0, 1);
}

/// ALLOC_PD / DEALLOC_PD.
pub mod pd {
    use super::Field;
    /// `alloc_pd_out.pd` and `dealloc_pd_in.pd`.
    pub const PD: Field = Field::new(0x48, 24);
    /// `_in` and `_out` size of both commands.
    pub const LEN: usize = 16;
}

/// The memory key context (`mkc`), offsets relative to its start.
pub mod mkc {
    use super::{Field, Field64};
    /// `free`.
    pub const FREE: Field = Field::new(0x01, 1);
    /// `access_mode_4_2`.
    pub const ACCESS_MODE_4_2: Field = Field::new(0x03, 3);
    /// `umr_en`.
    pub const UMR_EN: Field = Field::new(0x10, 1);
    /// `access_mode_1_0` (MTT = 1).
    pub const ACCESS_MODE_1_0: Field = Field::new(0x16, 2);
    /// `qpn` (must be 0xffffff).
    pub const QPN: Field = Field::new(0x20, 24);
    /// `mkey_7_0`: the key's variant byte.
    pub const MKEY_7_0: Field = Field::new(0x38, 8);
    /// `length64`.
    pub const LENGTH64: Field = Field::new(0x60, 1);
    /// `pd`.
    pub const PD: Field = Field::new(0x68, 24);
    /// `start_addr`.
    pub const START_ADDR: Field64 = Field64::at_bit(0x80);
    /// `len`.
    pub const LEN: Field64 = Field64::at_bit(0xc0);
    /// `translations_octword_size`.
    pub const TRANSLATIONS_OCTWORD_SIZE: Field = Field::new(0x1a0, 32);
    /// `log_page_size` (the kernel's 6-bit reading; rdma-core's 5-bit field
    /// at 0x1db ends at the same bit).
    pub const LOG_PAGE_SIZE: Field = Field::new(0x1da, 6);
}

/// CREATE_MKEY / DESTROY_MKEY.
pub mod mkey {
    use super::{Field, Field64, mkc};
    /// Bit offset of the `mkc` inside `create_mkey_in`.
    pub const MKC_BIT: usize = 0x80;
    /// `create_mkey_in.pg_access`.
    pub const PG_ACCESS: Field = Field::new(0x60, 1);
    /// `create_mkey_in.mkey_umem_valid`.
    pub const MKEY_UMEM_VALID: Field = Field::new(0x61, 1);
    /// `mkc.access_mode_4_2` in `create_mkey_in`.
    pub const ACCESS_MODE_4_2: Field = mkc::ACCESS_MODE_4_2.within(MKC_BIT);
    /// `mkc.access_mode_1_0` in `create_mkey_in`.
    pub const ACCESS_MODE_1_0: Field = mkc::ACCESS_MODE_1_0.within(MKC_BIT);
    /// `mkc.qpn` in `create_mkey_in`.
    pub const QPN: Field = mkc::QPN.within(MKC_BIT);
    /// `mkc.mkey_7_0` in `create_mkey_in`.
    pub const MKEY_7_0: Field = mkc::MKEY_7_0.within(MKC_BIT);
    /// `mkc.length64` in `create_mkey_in`.
    pub const LENGTH64: Field = mkc::LENGTH64.within(MKC_BIT);
    /// `mkc.pd` in `create_mkey_in`.
    pub const PD: Field = mkc::PD.within(MKC_BIT);
    /// `mkc.start_addr` in `create_mkey_in`.
    pub const START_ADDR: Field64 = Field64::at_bit(MKC_BIT + 0x80);
    /// `mkc.len` in `create_mkey_in`.
    pub const LEN: Field64 = Field64::at_bit(MKC_BIT + 0xc0);
    /// `mkc.translations_octword_size` in `create_mkey_in`.
    pub const TRANSLATIONS_OCTWORD_SIZE: Field = mkc::TRANSLATIONS_OCTWORD_SIZE.within(MKC_BIT);
    /// `mkc.log_page_size` in `create_mkey_in`.
    pub const LOG_PAGE_SIZE: Field = mkc::LOG_PAGE_SIZE.within(MKC_BIT);
    /// `create_mkey_in.translations_octword_actual_size`.
    pub const TRANSLATIONS_OCTWORD_ACTUAL_SIZE: Field = Field::new(0x300, 32);
    /// Byte offset of the MTT list (`klm_pas_mtt`) in `create_mkey_in`.
    pub const MTT_BYTE: usize = 272;
    /// `create_mkey_out.mkey_index` and `destroy_mkey_in.mkey_index`.
    pub const MKEY_INDEX: Field = Field::new(0x48, 24);
    /// `destroy_mkey_in` size.
    pub const DESTROY_IN_LEN: usize = 16;
    /// `create_mkey_out` / `destroy_mkey_out` size.
    pub const OUT_LEN: usize = 16;
    /// MTT permission bits the driver may OR into an entry (READ | WRITE).
    pub const MTT_PERM_MASK: u64 = 0x3;
}

/// SUSPEND_VHCA / RESUME_VHCA (identical layouts).
pub mod vhca {
    use super::Field;
    /// `vhca_id`.
    pub const VHCA_ID: Field = Field::new(0x50, 16);
    /// `_in` and `_out` size.
    pub const LEN: usize = 16;
    /// SUSPEND_VHCA op_mod INITIATOR.
    pub const SUSPEND_INITIATOR: u16 = 0;
    /// SUSPEND_VHCA op_mod RESPONDER.
    pub const SUSPEND_RESPONDER: u16 = 1;
    /// RESUME_VHCA op_mod RESPONDER (note: reversed vs. suspend).
    pub const RESUME_RESPONDER: u16 = 0;
    /// RESUME_VHCA op_mod INITIATOR.
    pub const RESUME_INITIATOR: u16 = 1;
}

/// QUERY_VHCA_MIGRATION_STATE.
pub mod query_mig {
    use super::{Field, Field64};
    /// `incremental`.
    pub const INCREMENTAL: Field = Field::new(0x40, 1);
    /// `chunk`.
    pub const CHUNK: Field = Field::new(0x41, 1);
    /// `vhca_id`.
    pub const VHCA_ID: Field = Field::new(0x50, 16);
    /// `_out.required_umem_size`.
    pub const REQUIRED_UMEM_SIZE: Field = Field::new(0x80, 32);
    /// `_out.remaining_total_size`.
    pub const REMAINING_TOTAL_SIZE: Field64 = Field64::at_bit(0xc0);
    /// `_out.migration_state` (a posted patch's 4-bit field; reserved in the
    /// merged header). The sim reports it only when a fault knob asks.
    pub const MIGRATION_STATE: Field = Field::new(0x60, 4);
    /// `migration_state` value: new initial data (PRECOPY_INFOv2 REINIT).
    pub const MIGRATION_STATE_INIT: u32 = 4;
    /// `_in` size.
    pub const IN_LEN: usize = 16;
    /// `_out` size.
    pub const OUT_LEN: usize = 64;
}

/// SAVE_VHCA_STATE.
pub mod save {
    use super::{Field, Field64};
    /// `incremental`.
    pub const INCREMENTAL: Field = Field::new(0x40, 1);
    /// `set_track`.
    pub const SET_TRACK: Field = Field::new(0x41, 1);
    /// `vhca_id`.
    pub const VHCA_ID: Field = Field::new(0x50, 16);
    /// `va`.
    pub const VA: Field64 = Field64::at_bit(0x80);
    /// `mkey`.
    pub const MKEY: Field = Field::new(0xc0, 32);
    /// `size`.
    pub const SIZE: Field = Field::new(0xe0, 32);
    /// `_out.actual_image_size`.
    pub const ACTUAL_IMAGE_SIZE: Field = Field::new(0x40, 32);
    /// `_out.next_required_umem_size`.
    pub const NEXT_REQUIRED_UMEM_SIZE: Field = Field::new(0x60, 32);
    /// `_in` size.
    pub const IN_LEN: usize = 32;
    /// `_out` size.
    pub const OUT_LEN: usize = 16;
}

/// LOAD_VHCA_STATE.
pub mod load {
    use super::{Field, Field64};
    /// `vhca_id`.
    pub const VHCA_ID: Field = Field::new(0x50, 16);
    /// `va`.
    pub const VA: Field64 = Field64::at_bit(0x80);
    /// `mkey`.
    pub const MKEY: Field = Field::new(0xc0, 32);
    /// `size`.
    pub const SIZE: Field = Field::new(0xe0, 32);
    /// `_in` size.
    pub const IN_LEN: usize = 32;
    /// `_out` size.
    pub const OUT_LEN: usize = 16;
}

/// Which bits of a fixed-size `_in` structure carry a field: everything else
/// is reserved and must be zero.
///
/// Built at compile time from the field table, so the reserved-bit check can
/// never disagree with the decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsedBits<const N: usize> {
    mask: [u8; N],
}

impl<const N: usize> UsedBits<N> {
    /// The header fields (opcode, uid, op_mod) plus `fields` and the 64-bit
    /// `wide` fields.
    ///
    /// # Panics
    /// At compile time when a field lies outside the `N`-byte structure.
    #[must_use]
    #[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
    pub const fn new(fields: &[Field], wide: &[Field64]) -> Self {
        let mut mask = [0u8; N];
        // Opcode, uid and op_mod: bytes 0..4 and 6..8.
        mask[0] = 0xff;
        mask[1] = 0xff;
        mask[2] = 0xff;
        mask[3] = 0xff;
        mask[6] = 0xff;
        mask[7] = 0xff;
        let mut f = 0;
        // PANIC: const evaluation only (every `UsedBits` is a const); an
        // out-of-range field is a compile error, never a runtime panic.
        while f < fields.len() {
            let field = fields[f];
            let mut bit = field.bit;
            while bit < field.bit + field.width as usize {
                mask[bit / 8] |= 0x80 >> (bit % 8);
                bit += 1;
            }
            f += 1;
        }
        let mut w = 0;
        while w < wide.len() {
            let mut b = 0;
            while b < 8 {
                mask[wide[w].byte + b] = 0xff;
                b += 1;
            }
            w += 1;
        }
        Self { mask }
    }

    /// `true` when some bit outside the known fields is set in the first `N`
    /// bytes of `input` (missing bytes count as zero).
    #[must_use]
    pub fn reserved_set(&self, input: &[u8]) -> bool {
        self.mask
            .iter()
            .zip(input.iter())
            .any(|(used, byte)| byte & !used != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_set_round_trip_matches_ifc_convention() {
        let mut buf = [0u8; 16];
        // vhca_id at bit 0x50, width 16 = bytes 10..12.
        set_bits(&mut buf, 0x50, 16, 0xbeef);
        assert_eq!(buf[10..12], [0xbe, 0xef]);
        assert_eq!(get_bits(&buf, 0x50, 16), 0xbeef);
        // pd at bit 0x48, width 24 = bytes 9..12, next to the vhca_id bits.
        let mut buf = [0u8; 16];
        pd::PD.set(&mut buf, 0x12_3456);
        assert_eq!(buf[9..12], [0x12, 0x34, 0x56]);
        // One-bit flags: incremental = MSB of dword 2, chunk the next bit.
        let mut buf = [0u8; 16];
        query_mig::CHUNK.set(&mut buf, 1);
        assert_eq!(buf[8], 0x40);
        query_mig::INCREMENTAL.set(&mut buf, 1);
        assert_eq!(buf[8], 0xc0);
        assert_eq!(query_mig::CHUNK.get(&buf), 1);
    }

    #[test]
    fn cap_fields_land_on_documented_bytes() {
        let mut cap = [0u8; 256];
        cmd_hca_cap::MIGRATION.set(&mut cap, 1);
        assert_eq!(cap[209], 0x04); // dword 52, shift 18 → byte 209, bit 2
        let mut cap = [0u8; 256];
        cmd_hca_cap::ADV_VIRTUALIZATION.set(&mut cap, 1);
        assert_eq!(cap[175], 0x40);
        let mut cap = [0u8; 64];
        cmd_hca_cap_2::MIGRATABLE.set(&mut cap, 1);
        assert_eq!(cap[16], 0x80);
        cmd_hca_cap_2::MIGRATION_MULTI_LOAD.set(&mut cap, 1);
        cmd_hca_cap_2::MIGRATION_TRACKING_STATE.set(&mut cap, 1);
        assert_eq!(cap[25], 0xc0);
        cmd_hca_cap_2::MIGRATION_IN_CHUNKS.set(&mut cap, 1);
        assert_eq!(cap[26], 0x80);
    }

    #[test]
    fn out_of_range_is_total() {
        let mut short = [0xffu8; 3];
        assert_eq!(be32(&short, 0), 0xffff_ff00);
        assert_eq!(get_bits(&short, 0x1000, 8), 0);
        set_bits(&mut short, 0x1000, 8, 0xff);
        put_be64(&mut short, usize::MAX - 2, 1);
        assert_eq!(be64(&short, usize::MAX), 0);
    }

    #[test]
    fn used_bits_flags_reserved() {
        const U: UsedBits<16> = UsedBits::new(&[vhca::VHCA_ID], &[]);
        let mut buf = [0u8; 16];
        hdr::OPCODE.set(&mut buf, 0x115);
        vhca::VHCA_ID.set(&mut buf, 0xffff);
        assert!(!U.reserved_set(&buf));
        buf[8] = 1;
        assert!(U.reserved_set(&buf));
    }
}
