//! A PF's own lifecycle, for platforms that bring the function up
//! themselves (`reference/mlx5-ifc.md` §2.5, §5): ENABLE_HCA / DISABLE_HCA,
//! QUERY_ISSI / SET_ISSI, QUERY_PAGES / MANAGE_PAGES, SET_HCA_CAP,
//! INIT_HCA and TEARDOWN_HCA. Under Linux, `mlx5_core` does all of this;
//! `mlx5vf`'s `vfio-pf:` backend owns the PF and must do it itself.

use super::command::{Command, EncodeError};
use super::hca_cap::{CAPABILITY_OFFSET, CAPABILITY_SIZE, CapType};
use super::header::{DecodeError, checked_output, write_in_header};
use super::layout::{Checked, CheckedMut, layout};
use super::status::Opcode;

layout! {
    /// `enable_hca_in` (DISABLE_HCA's input has the same members).
    pub mod enable_hca_in: LayoutKind::Input { opcode: 0x104 }, 16 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        uid: u16 = [0x10, 0x10],
        reserved_at_20: u16 = [0x20, 0x10],
        op_mod: u16 = [0x30, 0x10],
        embedded_cpu_function: bool = [0x40, 0x01],
        reserved_at_41: u16 = [0x41, 0x0f],
        function_id: u16 = [0x50, 0x10],
        reserved_at_60: u32 = [0x60, 0x20],
    }
}

layout! {
    /// `disable_hca_in`.
    pub mod disable_hca_in: LayoutKind::Input { opcode: 0x105 }, 16 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        uid: u16 = [0x10, 0x10],
        reserved_at_20: u16 = [0x20, 0x10],
        op_mod: u16 = [0x30, 0x10],
        embedded_cpu_function: bool = [0x40, 0x01],
        reserved_at_41: u16 = [0x41, 0x0f],
        function_id: u16 = [0x50, 0x10],
        reserved_at_60: u32 = [0x60, 0x20],
    }
}

layout! {
    /// The header-only output of ENABLE_HCA, DISABLE_HCA, SET_ISSI,
    /// SET_HCA_CAP and INIT_HCA (`enable_hca_out` and its twins).
    pub mod enable_hca_out: LayoutKind::Output, 16 bytes, tiled {
        status: u8 = [0x00, 0x08],
        reserved_at_8: u32 = [0x08, 0x18],
        syndrome: u32 = [0x20, 0x20],
        reserved_at_40: u64 = [0x40, 0x40],
    }
}

layout! {
    /// `query_issi_in` (SET_ISSI's input adds `current_issi`).
    pub mod query_issi_in: LayoutKind::Input { opcode: 0x10a }, 16 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        uid: u16 = [0x10, 0x10],
        reserved_at_20: u16 = [0x20, 0x10],
        op_mod: u16 = [0x30, 0x10],
        reserved_at_40: u64 = [0x40, 0x40],
    }
}

layout! {
    /// `query_issi_out`: 112 bytes; `supported_issi_dw0` bit n = ISSI n.
    pub mod query_issi_out: LayoutKind::Output, 112 bytes, tiled {
        status: u8 = [0x00, 0x08],
        reserved_at_8: u32 = [0x08, 0x18],
        syndrome: u32 = [0x20, 0x20],
        reserved_at_40: u16 = [0x40, 0x10],
        current_issi: u16 = [0x50, 0x10],
        reserved_at_60: Reserved = [0x60, 0xa0],
        reserved_at_100: Reserved = [0x100, 0x260],
        supported_issi_dw0: u32 = [0x360, 0x20],
    }
}

layout! {
    /// `set_issi_in`.
    pub mod set_issi_in: LayoutKind::Input { opcode: 0x10b }, 16 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        uid: u16 = [0x10, 0x10],
        reserved_at_20: u16 = [0x20, 0x10],
        op_mod: u16 = [0x30, 0x10],
        reserved_at_40: u16 = [0x40, 0x10],
        current_issi: u16 = [0x50, 0x10],
        reserved_at_60: u32 = [0x60, 0x20],
    }
}

layout! {
    /// `query_pages_in`.
    pub mod query_pages_in: LayoutKind::Input { opcode: 0x107 }, 16 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        uid: u16 = [0x10, 0x10],
        reserved_at_20: u16 = [0x20, 0x10],
        op_mod: u16 = [0x30, 0x10],
        embedded_cpu_function: bool = [0x40, 0x01],
        reserved_at_41: u16 = [0x41, 0x0f],
        function_id: u16 = [0x50, 0x10],
        reserved_at_60: u32 = [0x60, 0x20],
    }
}

layout! {
    /// `query_pages_out`: `num_pages` is signed (negative: firmware has
    /// pages to return).
    pub mod query_pages_out: LayoutKind::Output, 16 bytes, tiled {
        status: u8 = [0x00, 0x08],
        reserved_at_8: u32 = [0x08, 0x18],
        syndrome: u32 = [0x20, 0x20],
        embedded_cpu_function: bool = [0x40, 0x01],
        reserved_at_41: u16 = [0x41, 0x0f],
        function_id: u16 = [0x50, 0x10],
        num_pages: u32 = [0x60, 0x20],
    }
}

layout! {
    /// `manage_pages_in`: 16 bytes, then `pas[]` (one be64 page address
    /// each).
    pub mod manage_pages_in: LayoutKind::Input { opcode: 0x108 }, 16 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        uid: u16 = [0x10, 0x10],
        reserved_at_20: u16 = [0x20, 0x10],
        op_mod: u16 = [0x30, 0x10],
        embedded_cpu_function: bool = [0x40, 0x01],
        reserved_at_41: u16 = [0x41, 0x0f],
        function_id: u16 = [0x50, 0x10],
        input_num_entries: u32 = [0x60, 0x20],
    }
    tail pas [64] at 16
}

layout! {
    /// `manage_pages_out`: 16 bytes, then `pas[]` (TAKE returns pages).
    pub mod manage_pages_out: LayoutKind::Output, 16 bytes, tiled {
        status: u8 = [0x00, 0x08],
        reserved_at_8: u32 = [0x08, 0x18],
        syndrome: u32 = [0x20, 0x20],
        output_num_entries: u32 = [0x40, 0x20],
        reserved_at_60: u32 = [0x60, 0x20],
    }
    tail pas [64] at 16
}

layout! {
    /// `set_hca_cap_in`: header, then the 4096-byte capability at byte 16.
    pub mod set_hca_cap_in: LayoutKind::Input { opcode: 0x109 }, 4112 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        uid: u16 = [0x10, 0x10],
        reserved_at_20: u16 = [0x20, 0x10],
        op_mod: u16 = [0x30, 0x10],
        other_function: bool = [0x40, 0x01],
        ec_vf_function: bool = [0x41, 0x01],
        reserved_at_42: u16 = [0x42, 0x0e],
        function_id: u16 = [0x50, 0x10],
        reserved_at_60: u32 = [0x60, 0x20],
        capability: Reserved = [0x80, 0x8000],
    }
}

layout! {
    /// `init_hca_in` (32 bytes in current kernels: `sw_owner_id` follows).
    pub mod init_hca_in: LayoutKind::Input { opcode: 0x102 }, 32 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        uid: u16 = [0x10, 0x10],
        reserved_at_20: u16 = [0x20, 0x10],
        op_mod: u16 = [0x30, 0x10],
        reserved_at_40: u32 = [0x40, 0x20],
        reserved_at_60: u8 = [0x60, 0x02],
        sw_vhca_id: u16 = [0x62, 0x0e],
        reserved_at_70: u16 = [0x70, 0x10],
        sw_owner_id: Reserved = [0x80, 0x80],
    }
}

layout! {
    /// `teardown_hca_in`.
    pub mod teardown_hca_in: LayoutKind::Input { opcode: 0x103 }, 16 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        uid: u16 = [0x10, 0x10],
        reserved_at_20: u16 = [0x20, 0x10],
        op_mod: u16 = [0x30, 0x10],
        reserved_at_40: u16 = [0x40, 0x10],
        profile: u16 = [0x50, 0x10],
        reserved_at_60: u32 = [0x60, 0x20],
    }
}

layout! {
    /// `teardown_hca_out`: `force_state` 1 = a forced teardown failed.
    pub mod teardown_hca_out: LayoutKind::Output, 16 bytes, tiled {
        status: u8 = [0x00, 0x08],
        reserved_at_8: u32 = [0x08, 0x18],
        syndrome: u32 = [0x20, 0x20],
        reserved_at_40: u32 = [0x40, 0x20],
        reserved_at_60: u32 = [0x60, 0x1f],
        force_state: bool = [0x7f, 0x01],
    }
}

/// ENABLE_HCA: function 0 is the PF itself, VF `n` is `n + 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnableHca {
    /// The function.
    pub function_id: u16,
}

impl Command for EnableHca {
    const OPCODE: Opcode = Opcode::EnableHca;
    type In = enable_hca_in::Bits;
    type Out = enable_hca_out::Bits;
    type Output = ();

    fn encode_fields(&self, input: &mut CheckedMut<'_, Self::In>) -> Result<(), EncodeError> {
        Ok(input.set(enable_hca_in::function_id, self.function_id)?)
    }
    fn decode_fields(&self, _out: Checked<'_, Self::Out>) {}
}

/// DISABLE_HCA: undoes [`EnableHca`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DisableHca {
    /// The function.
    pub function_id: u16,
}

impl Command for DisableHca {
    const OPCODE: Opcode = Opcode::DisableHca;
    type In = disable_hca_in::Bits;
    type Out = enable_hca_out::Bits;
    type Output = ();

    fn encode_fields(&self, input: &mut CheckedMut<'_, Self::In>) -> Result<(), EncodeError> {
        Ok(input.set(disable_hca_in::function_id, self.function_id)?)
    }
    fn decode_fields(&self, _out: Checked<'_, Self::Out>) {}
}

/// QUERY_ISSI.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueryIssi;

/// What QUERY_ISSI reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Issi {
    /// The interface step sequence in use.
    pub current: u16,
    /// Bit n set: ISSI n supported (only ISSIs 0..=31 are reported here).
    pub supported: u32,
}

impl Issi {
    /// Whether ISSI `issi` is supported.
    pub const fn supports(&self, issi: u16) -> bool {
        issi < 32 && self.supported & (1 << (issi & 31)) != 0
    }
}

impl Command for QueryIssi {
    const OPCODE: Opcode = Opcode::QueryIssi;
    type In = query_issi_in::Bits;
    type Out = query_issi_out::Bits;
    type Output = Issi;

    fn encode_fields(&self, _input: &mut CheckedMut<'_, Self::In>) -> Result<(), EncodeError> {
        Ok(())
    }
    fn decode_fields(&self, out: Checked<'_, Self::Out>) -> Issi {
        Issi {
            current: out.get(query_issi_out::current_issi),
            supported: out.get(query_issi_out::supported_issi_dw0),
        }
    }
}

/// SET_ISSI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetIssi {
    /// The ISSI to use (both drivers use 1).
    pub issi: u16,
}

impl Command for SetIssi {
    const OPCODE: Opcode = Opcode::SetIssi;
    type In = set_issi_in::Bits;
    type Out = enable_hca_out::Bits;
    type Output = ();

    fn encode_fields(&self, input: &mut CheckedMut<'_, Self::In>) -> Result<(), EncodeError> {
        Ok(input.set(set_issi_in::current_issi, self.issi)?)
    }
    fn decode_fields(&self, _out: Checked<'_, Self::Out>) {}
}

/// Which pages QUERY_PAGES asks about (its op_mod).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PagesPhase {
    /// Before INIT_HCA's capabilities (`MLX5_QUERY_PAGES_IN_OP_MOD_BOOT_PAGES`).
    Boot,
    /// For INIT_HCA (`..._INIT_PAGES`).
    Init,
    /// While running (`..._REGULAR_PAGES`).
    Regular,
}

/// QUERY_PAGES: how many pages firmware wants for `function_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryPages {
    /// The function.
    pub function_id: u16,
    /// Which pages.
    pub phase: PagesPhase,
}

impl Command for QueryPages {
    const OPCODE: Opcode = Opcode::QueryPages;
    type In = query_pages_in::Bits;
    type Out = query_pages_out::Bits;
    /// Pages firmware wants (negative: pages it would give back).
    type Output = i32;

    fn op_mod(&self) -> u16 {
        match self.phase {
            PagesPhase::Boot => 1,
            PagesPhase::Init => 2,
            PagesPhase::Regular => 3,
        }
    }
    fn encode_fields(&self, input: &mut CheckedMut<'_, Self::In>) -> Result<(), EncodeError> {
        Ok(input.set(query_pages_in::function_id, self.function_id)?)
    }
    fn decode_fields(&self, out: Checked<'_, Self::Out>) -> i32 {
        // CAST: the field is a signed 32-bit count on the wire.
        out.get(query_pages_out::num_pages) as i32
    }
}

/// `MLX5_PAGES_GIVE`.
pub const MANAGE_PAGES_GIVE: u16 = 1;
/// `MLX5_PAGES_TAKE`.
pub const MANAGE_PAGES_TAKE: u16 = 2;
/// Byte offset of `pas[]` in MANAGE_PAGES' input and output.
pub const PAS_OFFSET: usize = manage_pages_in::SIZE;

/// Bytes of a MANAGE_PAGES input (or TAKE output) with `npages` entries.
pub const fn manage_pages_len(npages: u32) -> usize {
    // CAST: u32 -> usize is lossless on every target we build.
    PAS_OFFSET.saturating_add((npages as usize).saturating_mul(8))
}

/// Encodes MANAGE_PAGES(GIVE) of the 4 KiB pages at `pages` to
/// `function_id`. Returns the input length.
///
/// # Errors
/// [`EncodeError::InsufficientSize`] (nothing written), or
/// [`EncodeError::ValueTooWide`] naming `pas` for an unaligned page or
/// `input_num_entries` for more than `u32::MAX` pages.
pub fn encode_manage_pages_give<I>(
    buf: &mut [u8],
    function_id: u16,
    pages: I,
) -> Result<usize, EncodeError>
where
    I: ExactSizeIterator<Item = u64>,
{
    let count = pages.len();
    let n = u32::try_from(count).map_err(|_| EncodeError::ValueTooWide {
        field: "input_num_entries",
        // CAST: usize -> u64 is lossless.
        value: count as u64,
    })?;
    let len = manage_pages_len(n);
    let dst = buf
        .get_mut(..len)
        .ok_or(EncodeError::InsufficientSize { required: len })?;
    dst.fill(0);
    write_in_header(dst, Opcode::ManagePages, MANAGE_PAGES_GIVE)?;
    manage_pages_in::function_id.set(dst, function_id)?;
    manage_pages_in::input_num_entries.set(dst, n)?;
    let pas = dst.get_mut(PAS_OFFSET..).unwrap_or_default();
    for (slot, addr) in pas.chunks_exact_mut(8).zip(pages) {
        if addr & 0xfff != 0 {
            return Err(EncodeError::ValueTooWide {
                field: "pas",
                value: addr,
            });
        }
        for (d, b) in slot.iter_mut().zip(addr.to_be_bytes()) {
            *d = b;
        }
    }
    Ok(len)
}

/// Encodes MANAGE_PAGES(TAKE) of up to `npages` pages from `function_id`
/// (16 bytes; the output needs [`manage_pages_len`]`(npages)`).
///
/// # Errors
/// [`EncodeError::InsufficientSize`].
pub fn encode_manage_pages_take(
    buf: &mut [u8],
    function_id: u16,
    npages: u32,
) -> Result<usize, EncodeError> {
    let dst = buf
        .get_mut(..PAS_OFFSET)
        .ok_or(EncodeError::InsufficientSize {
            required: PAS_OFFSET,
        })?;
    dst.fill(0);
    write_in_header(dst, Opcode::ManagePages, MANAGE_PAGES_TAKE)?;
    manage_pages_in::function_id.set(dst, function_id)?;
    manage_pages_in::input_num_entries.set(dst, npages)?;
    Ok(PAS_OFFSET)
}

/// Decodes a MANAGE_PAGES output: the pages it returns (TAKE; none for
/// GIVE), as big-endian entries of the caller's `out`, after checking that
/// `output_num_entries` fits the output.
///
/// # Errors
/// [`DecodeError::Failed`] for a non-OK status, `Truncated` when the
/// output is shorter than its header or than its entries.
pub fn decode_manage_pages_out(out: &[u8], op_mod: u16) -> Result<&[u8], DecodeError> {
    let checked = checked_output::<manage_pages_out::Bits>(Opcode::ManagePages, op_mod, out)?;
    let n = checked.get(manage_pages_out::output_num_entries);
    let len = manage_pages_len(n);
    out.get(PAS_OFFSET..len).ok_or(DecodeError::Truncated {
        structure: "manage_pages_out",
        needed: len,
        actual: out.len(),
    })
}

/// Encodes SET_HCA_CAP of `cap_type` for the issuing function with the
/// capability bytes `cap` (at most 4096; the rest is zero). Returns the
/// input length (4112).
///
/// # Errors
/// [`EncodeError::InsufficientSize`] for a short `buf` (nothing written) or
/// a `cap` longer than the capability area.
pub fn encode_set_hca_cap(
    buf: &mut [u8],
    cap_type: CapType,
    cap: &[u8],
) -> Result<usize, EncodeError> {
    if cap.len() > CAPABILITY_SIZE {
        return Err(EncodeError::InsufficientSize {
            required: CAPABILITY_OFFSET.saturating_add(cap.len()),
        });
    }
    let dst = buf
        .get_mut(..set_hca_cap_in::SIZE)
        .ok_or(EncodeError::InsufficientSize {
            required: set_hca_cap_in::SIZE,
        })?;
    dst.fill(0);
    let op_mod = match cap_type {
        CapType::General => 0,
        CapType::General2 => 0x20 << 1,
    };
    write_in_header(dst, Opcode::SetHcaCap, op_mod)?;
    let area = dst.get_mut(CAPABILITY_OFFSET..).unwrap_or_default();
    for (d, s) in area.iter_mut().zip(cap) {
        *d = *s;
    }
    Ok(set_hca_cap_in::SIZE)
}

/// INIT_HCA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InitHca;

impl Command for InitHca {
    const OPCODE: Opcode = Opcode::InitHca;
    type In = init_hca_in::Bits;
    type Out = enable_hca_out::Bits;
    type Output = ();

    fn encode_fields(&self, _input: &mut CheckedMut<'_, Self::In>) -> Result<(), EncodeError> {
        Ok(())
    }
    fn decode_fields(&self, _out: Checked<'_, Self::Out>) {}
}

/// TEARDOWN_HCA's profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TeardownProfile {
    /// `MLX5_TEARDOWN_HCA_IN_PROFILE_GRACEFUL_CLOSE`.
    Graceful,
    /// `..._FORCE_CLOSE`.
    Force,
}

/// TEARDOWN_HCA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TeardownHca {
    /// How.
    pub profile: TeardownProfile,
}

impl Command for TeardownHca {
    const OPCODE: Opcode = Opcode::TeardownHca;
    type In = teardown_hca_in::Bits;
    type Out = teardown_hca_out::Bits;
    /// `force_state`: a forced teardown did not complete.
    type Output = bool;

    fn encode_fields(&self, input: &mut CheckedMut<'_, Self::In>) -> Result<(), EncodeError> {
        let profile = match self.profile {
            TeardownProfile::Graceful => 0,
            TeardownProfile::Force => 1,
        };
        Ok(input.set(teardown_hca_in::profile, profile)?)
    }
    fn decode_fields(&self, out: Checked<'_, Self::Out>) -> bool {
        out.get(teardown_hca_out::force_state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ifc::hca_cap::cmd_hca_cap;
    use crate::ifc::{CmdStatus, layout_by_name};

    /// `reference/mlx5-ifc.md` §2.3 and §2.5: (structure, member, bit, width).
    const REFERENCE: &[(&str, &str, u32, u32)] = &[
        ("enable_hca_in", "embedded_cpu_function", 0x40, 1),
        ("enable_hca_in", "function_id", 0x50, 16),
        ("disable_hca_in", "function_id", 0x50, 16),
        ("query_issi_out", "current_issi", 0x50, 16),
        ("query_issi_out", "supported_issi_dw0", 0x360, 32),
        ("set_issi_in", "current_issi", 0x50, 16),
        ("query_pages_in", "function_id", 0x50, 16),
        ("query_pages_out", "function_id", 0x50, 16),
        ("query_pages_out", "num_pages", 0x60, 32),
        ("manage_pages_in", "function_id", 0x50, 16),
        ("manage_pages_in", "input_num_entries", 0x60, 32),
        ("manage_pages_out", "output_num_entries", 0x40, 32),
        ("teardown_hca_in", "profile", 0x50, 16),
        ("teardown_hca_out", "force_state", 0x7f, 1),
        ("cmd_hca_cap", "cmdif_checksum", 0x210, 2),
    ];

    #[test]
    fn offsets_and_sizes_match_the_reference() {
        for &(layout, name, bit, width) in REFERENCE {
            let l = layout_by_name(layout).unwrap();
            let f = l.fields.iter().find(|f| f.name == name).unwrap();
            assert_eq!((f.bit, f.width), (bit, width), "{layout}.{name}");
        }
        for (name, size) in [
            ("query_issi_out", 112),
            ("set_hca_cap_in", 4112),
            ("init_hca_in", 32),
            ("manage_pages_in", 16),
        ] {
            assert_eq!(layout_by_name(name).unwrap().size, size, "{name}");
        }
        assert_eq!(
            layout_by_name("manage_pages_in")
                .unwrap()
                .tail
                .unwrap()
                .byte,
            16
        );
    }

    #[test]
    fn golden_lifecycle_inputs() {
        let mut b = [0xffu8; 32];
        assert_eq!(EnableHca { function_id: 3 }.encode(&mut b), Ok(16));
        assert_eq!(&b[..16], &[1, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0]);
        assert_eq!(DisableHca { function_id: 0 }.encode(&mut b), Ok(16));
        assert_eq!(&b[..4], &[1, 5, 0, 0]);
        assert_eq!(SetIssi { issi: 1 }.encode(&mut b), Ok(16));
        assert_eq!(
            &b[..16],
            &[1, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
        );
        let q = QueryPages {
            function_id: 2,
            phase: PagesPhase::Init,
        };
        assert_eq!(q.encode(&mut b), Ok(16));
        assert_eq!(&b[..16], &[1, 7, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0]);
        assert_eq!(InitHca.encode(&mut b), Ok(32));
        assert_eq!(&b[..32], &{
            let mut w = [0u8; 32];
            w[1] = 2;
            w[0] = 1;
            w
        });
        let t = TeardownHca {
            profile: TeardownProfile::Force,
        };
        assert_eq!(t.encode(&mut b), Ok(16));
        assert_eq!(&b[..16], &[1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn golden_manage_pages() {
        let mut b = [0u8; 48];
        let n = encode_manage_pages_give(&mut b, 1, [0x1000u64, 0x7_0000_2000].into_iter());
        assert_eq!(n, Ok(32));
        assert_eq!(&b[..16], &[1, 8, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(&b[16..24], &0x1000u64.to_be_bytes());
        assert_eq!(&b[24..32], &0x7_0000_2000u64.to_be_bytes());
        assert_eq!(
            encode_manage_pages_give(&mut b, 0, [0x1001u64].into_iter()),
            Err(EncodeError::ValueTooWide {
                field: "pas",
                value: 0x1001
            })
        );
        let mut small = [7u8; 20];
        assert_eq!(
            encode_manage_pages_give(&mut small, 0, [0u64; 2].into_iter()),
            Err(EncodeError::InsufficientSize { required: 32 })
        );
        assert_eq!(small, [7; 20]);
        assert_eq!(encode_manage_pages_take(&mut b, 0, 5), Ok(16));
        assert_eq!(&b[..16], &[1, 8, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 5]);
        // TAKE's output: two entries.
        let mut out = [0u8; 32];
        out[7] = 0;
        out[11] = 2;
        out[16..24].copy_from_slice(&0x5000u64.to_be_bytes());
        assert_eq!(
            decode_manage_pages_out(&out, MANAGE_PAGES_TAKE).map(<[u8]>::len),
            Ok(16)
        );
        // It claims more entries than it carries.
        out[11] = 3;
        assert!(matches!(
            decode_manage_pages_out(&out, MANAGE_PAGES_TAKE),
            Err(DecodeError::Truncated { needed: 40, .. })
        ));
        out[0] = 0x05;
        assert!(matches!(
            decode_manage_pages_out(&out, MANAGE_PAGES_TAKE),
            Err(DecodeError::Failed(e)) if e.status == CmdStatus::BadResErr
        ));
    }

    #[test]
    fn set_hca_cap_carries_the_capability() {
        let mut cap = [0u8; 4096];
        cmd_hca_cap::cmdif_checksum.set(&mut cap, 3).unwrap();
        cap[4095] = 0xaa;
        let mut b = [0u8; 4112];
        assert_eq!(
            encode_set_hca_cap(&mut b, CapType::General2, &cap),
            Ok(4112)
        );
        assert_eq!(&b[..8], &[1, 9, 0, 0, 0, 0, 0, 0x40]);
        // cmdif_checksum: bit 0x210 of the capability, 2 bits = byte 66.
        assert_eq!(b[16 + 66], 0xc0);
        assert_eq!(b[4111], 0xaa);
        assert!(encode_set_hca_cap(&mut b[..100], CapType::General, &cap).is_err());
    }

    #[test]
    fn outputs_decode() {
        let mut out = [0u8; 112];
        out[10..12].copy_from_slice(&1u16.to_be_bytes());
        out[108..112].copy_from_slice(&0b110u32.to_be_bytes());
        let issi = QueryIssi.decode(&out).unwrap();
        assert_eq!(issi.current, 1);
        assert!(issi.supports(1) && issi.supports(2) && !issi.supports(0));
        assert!(!issi.supports(40));
        assert!(QueryIssi.decode(&out[..16]).is_err());
        let mut out = [0u8; 16];
        out[12..16].copy_from_slice(&(-5i32).to_be_bytes());
        let q = QueryPages {
            function_id: 0,
            phase: PagesPhase::Boot,
        };
        assert_eq!(q.decode(&out), Ok(-5));
        out[15] = 1;
        out[12..15].fill(0);
        let t = TeardownHca {
            profile: TeardownProfile::Graceful,
        };
        assert_eq!(t.decode(&out), Ok(true));
    }
}
