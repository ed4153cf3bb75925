//! QUERY_VHCA_MIGRATION_STATE, SAVE_VHCA_STATE and LOAD_VHCA_STATE.

use super::command::{Command, EncodeError};
use super::header::{DecodeError, checked_output};
use super::layout::{Checked, CheckedMut, layout};
use super::mkey::Mkey;
use super::status::Opcode;

layout! {
    /// `query_vhca_migration_state_in`.
    pub mod query_vhca_migration_state_in: LayoutKind::Input { opcode: 0x117 }, 16 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        uid: u16 = [0x10, 0x10],
        reserved_at_20: u16 = [0x20, 0x10],
        op_mod: u16 = [0x30, 0x10],
        incremental: bool = [0x40, 0x01],
        chunk: bool = [0x41, 0x01],
        reserved_at_42: u16 = [0x42, 0x0e],
        vhca_id: u16 = [0x50, 0x10],
        reserved_at_60: u32 = [0x60, 0x20],
    }
}

layout! {
    /// `query_vhca_migration_state_out`.
    pub mod query_vhca_migration_state_out: LayoutKind::Output, 64 bytes, tiled {
        status: u8 = [0x00, 0x08],
        reserved_at_8: u32 = [0x08, 0x18],
        syndrome: u32 = [0x20, 0x20],
        reserved_at_40: u64 = [0x40, 0x40],
        required_umem_size: u32 = [0x80, 0x20],
        reserved_at_a0: u32 = [0xa0, 0x20],
        remaining_total_size: u64 = [0xc0, 0x40],
        reserved_at_100: Reserved = [0x100, 0x100],
    }
}

layout! {
    /// `save_vhca_state_in`.
    pub mod save_vhca_state_in: LayoutKind::Input { opcode: 0x118 }, 32 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        uid: u16 = [0x10, 0x10],
        reserved_at_20: u16 = [0x20, 0x10],
        op_mod: u16 = [0x30, 0x10],
        incremental: bool = [0x40, 0x01],
        set_track: bool = [0x41, 0x01],
        reserved_at_42: u16 = [0x42, 0x0e],
        vhca_id: u16 = [0x50, 0x10],
        reserved_at_60: u32 = [0x60, 0x20],
        va: u64 = [0x80, 0x40],
        mkey: u32 = [0xc0, 0x20],
        size: u32 = [0xe0, 0x20],
    }
}

layout! {
    /// `save_vhca_state_out`.
    pub mod save_vhca_state_out: LayoutKind::Output, 16 bytes, tiled {
        status: u8 = [0x00, 0x08],
        reserved_at_8: u32 = [0x08, 0x18],
        syndrome: u32 = [0x20, 0x20],
        actual_image_size: u32 = [0x40, 0x20],
        next_required_umem_size: u32 = [0x60, 0x20],
    }
}

layout! {
    /// `load_vhca_state_in`.
    pub mod load_vhca_state_in: LayoutKind::Input { opcode: 0x119 }, 32 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        uid: u16 = [0x10, 0x10],
        reserved_at_20: u16 = [0x20, 0x10],
        op_mod: u16 = [0x30, 0x10],
        reserved_at_40: u16 = [0x40, 0x10],
        vhca_id: u16 = [0x50, 0x10],
        reserved_at_60: u32 = [0x60, 0x20],
        va: u64 = [0x80, 0x40],
        mkey: u32 = [0xc0, 0x20],
        size: u32 = [0xe0, 0x20],
    }
}

layout! {
    /// `load_vhca_state_out`.
    pub mod load_vhca_state_out: LayoutKind::Output, 16 bytes, tiled {
        status: u8 = [0x00, 0x08],
        reserved_at_8: u32 = [0x08, 0x18],
        syndrome: u32 = [0x20, 0x20],
        reserved_at_40: u64 = [0x40, 0x40],
    }
}

/// Whether a QUERY or SAVE covers the whole state or only what changed since
/// the last SAVE (the `incremental` bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Scope {
    /// The whole state (`incremental = 0`).
    Full,
    /// Changes since the previous SAVE (`incremental = 1`).
    Incremental,
}

/// Dirty tracking during a SAVE (the `set_track` bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Tracking {
    /// `set_track = 1`: keep (or start) tracking changes; used while PRE_COPY runs.
    Track,
    /// `set_track = 0`: no tracking; a final (stop-copy) or cleanup save.
    Untracked,
}

/// QUERY_VHCA_MIGRATION_STATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryMigrationState {
    /// The VF's VHCA id.
    pub vhca_id: u16,
    /// Full or incremental.
    pub scope: Scope,
    /// Ask for chunk-mode sizes (`chunk = 1`).
    pub chunked: bool,
}

/// The sizes QUERY_VHCA_MIGRATION_STATE reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MigrationStateSize {
    /// Minimum buffer for the next SAVE (per chunk in chunk mode).
    pub required_umem_size: u32,
    /// Everything that remains to be saved; meaningful only with `chunk = 1`.
    pub remaining_total_size: u64,
    /// The operational migration state ([`MIGRATION_STATE`]); 0 from
    /// firmware that does not report it.
    pub migration_state: u8,
}

/// `migration_state` of `query_vhca_migration_state_out`: 4 bits at bit 0x60,
/// inside what the merged Linux header still calls `reserved_at_40`. It comes
/// from a posted patch (2026, with `VFIO_PRECOPY_INFO_REINIT`) and is not in
/// the [`query_vhca_migration_state_out`] table, which follows the merged
/// header; firmware without it leaves the bits 0.
pub const MIGRATION_STATE: super::layout::TypedField<u8, query_vhca_migration_state_out::Bits> =
    super::layout::TypedField::new("migration_state", 0x60, 4);

// It lies inside the output (so a checked view reads it) and is a plain word.
const _: () = assert!(
    MIGRATION_STATE.field().end_byte() <= query_vhca_migration_state_out::SIZE
        && MIGRATION_STATE.field().is_well_formed()
);

/// `migration_state` values (the posted patch's
/// `MLX5_QUERY_VHCA_MIG_STATE_OPER_MIGRATION_*`).
pub mod migration_state {
    /// Not reported (or uninitialised).
    pub const UNINITIALIZED: u8 = 0;
    /// Idle.
    pub const IDLE: u8 = 1;
    /// Ready.
    pub const READY: u8 = 2;
    /// Dirty.
    pub const DIRTY: u8 = 3;
    /// New initial data appeared: PRECOPY_INFOv2 reports REINIT.
    pub const INIT: u8 = 4;
}

impl Command for QueryMigrationState {
    const OPCODE: Opcode = Opcode::QueryVhcaMigrationState;
    type In = query_vhca_migration_state_in::Bits;
    type Out = query_vhca_migration_state_out::Bits;
    type Output = MigrationStateSize;

    fn encode_fields(&self, input: &mut CheckedMut<'_, Self::In>) -> Result<(), EncodeError> {
        use query_vhca_migration_state_in as f;
        input.set(f::incremental, self.scope == Scope::Incremental)?;
        input.set(f::chunk, self.chunked)?;
        Ok(input.set(f::vhca_id, self.vhca_id)?)
    }
    fn decode_fields(&self, out: Checked<'_, Self::Out>) -> MigrationStateSize {
        use query_vhca_migration_state_out as f;
        MigrationStateSize {
            required_umem_size: out.get(f::required_umem_size),
            remaining_total_size: out.get(f::remaining_total_size),
            migration_state: out.get(MIGRATION_STATE),
        }
    }
}

/// SAVE_VHCA_STATE. The kernel leaves `va = 0` with the mkey's start address
/// at 0, so `va` is the offset into the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaveVhcaState {
    /// The VF's VHCA id.
    pub vhca_id: u16,
    /// Full or incremental.
    pub scope: Scope,
    /// Tracking.
    pub tracking: Tracking,
    /// Virtual address inside the mkey.
    pub va: u64,
    /// The buffer's memory key.
    pub mkey: Mkey,
    /// Buffer size in bytes.
    pub size: u32,
}

/// What a SAVE reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SaveResult {
    /// Bytes written into the buffer.
    pub actual_image_size: u32,
    /// In chunk mode, the buffer size the next chunk needs; 0 after the last.
    pub next_required_umem_size: u32,
}

impl SaveResult {
    /// Parses a SAVE_VHCA_STATE output: length, status, then the sizes.
    /// A SAVE completes asynchronously, so the completion path has the
    /// output but not the command that produced it; nothing about the
    /// command is needed to read it (SAVE's op_mod is always 0).
    ///
    /// ```
    /// use mlx5vf_core::ifc::migration::SaveResult;
    /// let mut out = [0u8; 16];
    /// out[8..12].copy_from_slice(&0x1000u32.to_be_bytes());
    /// let r = SaveResult::parse(&out).unwrap();
    /// assert_eq!(r.actual_image_size, 0x1000);
    /// assert_eq!(r.next_required_umem_size, 0);
    /// ```
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] for a short output, [`DecodeError::Failed`]
    /// for a non-OK status.
    pub fn parse(out: &[u8]) -> Result<Self, DecodeError> {
        checked_output(Opcode::SaveVhcaState, 0, out).map(Self::from_checked)
    }

    /// Reads the sizes from a checked output.
    pub fn from_checked(out: Checked<'_, save_vhca_state_out::Bits>) -> Self {
        use save_vhca_state_out as f;
        Self {
            actual_image_size: out.get(f::actual_image_size),
            next_required_umem_size: out.get(f::next_required_umem_size),
        }
    }
}

impl Command for SaveVhcaState {
    const OPCODE: Opcode = Opcode::SaveVhcaState;
    type In = save_vhca_state_in::Bits;
    type Out = save_vhca_state_out::Bits;
    type Output = SaveResult;

    fn encode_fields(&self, input: &mut CheckedMut<'_, Self::In>) -> Result<(), EncodeError> {
        use save_vhca_state_in as f;
        input.set(f::incremental, self.scope == Scope::Incremental)?;
        input.set(f::set_track, self.tracking == Tracking::Track)?;
        input.set(f::vhca_id, self.vhca_id)?;
        input.set(f::va, self.va)?;
        input.set(f::mkey, self.mkey.0)?;
        Ok(input.set(f::size, self.size)?)
    }
    fn decode_fields(&self, out: Checked<'_, Self::Out>) -> SaveResult {
        SaveResult::from_checked(out)
    }
}

/// LOAD_VHCA_STATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadVhcaState {
    /// The VF's VHCA id.
    pub vhca_id: u16,
    /// Virtual address inside the mkey.
    pub va: u64,
    /// The buffer's memory key.
    pub mkey: Mkey,
    /// Image size in bytes.
    pub size: u32,
}

impl Command for LoadVhcaState {
    const OPCODE: Opcode = Opcode::LoadVhcaState;
    type In = load_vhca_state_in::Bits;
    type Out = load_vhca_state_out::Bits;
    type Output = ();

    fn encode_fields(&self, input: &mut CheckedMut<'_, Self::In>) -> Result<(), EncodeError> {
        use load_vhca_state_in as f;
        input.set(f::vhca_id, self.vhca_id)?;
        input.set(f::va, self.va)?;
        input.set(f::mkey, self.mkey.0)?;
        Ok(input.set(f::size, self.size)?)
    }
    fn decode_fields(&self, _out: Checked<'_, Self::Out>) {}
}
