//! CREATE_MKEY (MTT mode) / DESTROY_MKEY: how firmware reaches a buffer.
//!
//! A migration buffer is a list of 4 KiB pages; its memory key maps the
//! virtual range `[0, npages * 4096)` (start address 0, as the kernel does)
//! onto the pages' bus addresses, one big-endian 64-bit MTT entry per page.

use bitfield_struct::bitfield;

use super::command::{Command, EncodeError};
use super::header::write_in_header;
use super::layout::{Checked, CheckedMut, FieldError, layout};
use super::pd::Pd;
use super::status::Opcode;

layout! {
    /// `mkc`: the memory key context.
    pub mod mkc: LayoutKind::Context, 64 bytes, tiled {
        reserved_at_0: bool = [0x00, 0x01],
        free: bool = [0x01, 0x01],
        reserved_at_2: bool = [0x02, 0x01],
        access_mode_4_2: u8 = [0x03, 0x03],
        reserved_at_6: u8 = [0x06, 0x07],
        relaxed_ordering_write: bool = [0x0d, 0x01],
        reserved_at_e: bool = [0x0e, 0x01],
        small_fence_on_rdma_read_response: bool = [0x0f, 0x01],
        umr_en: bool = [0x10, 0x01],
        a: bool = [0x11, 0x01],
        rw: bool = [0x12, 0x01],
        rr: bool = [0x13, 0x01],
        lw: bool = [0x14, 0x01],
        lr: bool = [0x15, 0x01],
        access_mode_1_0: u8 = [0x16, 0x02],
        reserved_at_18: u8 = [0x18, 0x02],
        ma_translation_mode: u8 = [0x1a, 0x02],
        reserved_at_1c: u8 = [0x1c, 0x04],
        qpn: u32 = [0x20, 0x18],
        mkey_7_0: u8 = [0x38, 0x08],
        reserved_at_40: u32 = [0x40, 0x20],
        length64: bool = [0x60, 0x01],
        bsf_en: bool = [0x61, 0x01],
        sync_umr: bool = [0x62, 0x01],
        reserved_at_63: u8 = [0x63, 0x02],
        expected_sigerr_count: bool = [0x65, 0x01],
        reserved_at_66: bool = [0x66, 0x01],
        en_rinval: bool = [0x67, 0x01],
        pd: u32 = [0x68, 0x18],
        start_addr: u64 = [0x80, 0x40],
        len: u64 = [0xc0, 0x40],
        bsf_octword_size: u32 = [0x100, 0x20],
        reserved_at_120: Reserved = [0x120, 0x60],
        crossing_target_vhca_id: u16 = [0x180, 0x10],
        reserved_at_190: u16 = [0x190, 0x10],
        translations_octword_size: u32 = [0x1a0, 0x20],
        reserved_at_1c0: u32 = [0x1c0, 0x19],
        relaxed_ordering_read: bool = [0x1d9, 0x01],
        log_page_size: u8 = [0x1da, 0x06],
        reserved_at_1e0: u32 = [0x1e0, 0x20],
    }
}

layout! {
    /// `create_mkey_in`: 272 fixed bytes, then `klm_pas_mtt[]` (32-bit
    /// elements; one 64-bit MTT entry per page spans two of them).
    pub mod create_mkey_in: LayoutKind::Input { opcode: 0x200 }, 272 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        uid: u16 = [0x10, 0x10],
        reserved_at_20: u16 = [0x20, 0x10],
        op_mod: u16 = [0x30, 0x10],
        reserved_at_40: u32 = [0x40, 0x20],
        pg_access: bool = [0x60, 0x01],
        mkey_umem_valid: bool = [0x61, 0x01],
        data_direct: bool = [0x62, 0x01],
        reserved_at_63: u32 = [0x63, 0x1d],
        memory_key_mkey_entry: Reserved = [0x80, 0x200],
        reserved_at_280: Reserved = [0x280, 0x80],
        translations_octword_actual_size: u32 = [0x300, 0x20],
        reserved_at_320: Reserved = [0x320, 0x560],
    }
    nested { memory_key_mkey_entry: super::mkc::LAYOUT = 0x80 }
    tail klm_pas_mtt [32] at 272
}

layout! {
    /// `create_mkey_out`.
    pub mod create_mkey_out: LayoutKind::Output, 16 bytes, tiled {
        status: u8 = [0x00, 0x08],
        reserved_at_8: u32 = [0x08, 0x18],
        syndrome: u32 = [0x20, 0x20],
        reserved_at_40: u8 = [0x40, 0x08],
        mkey_index: u32 = [0x48, 0x18],
        reserved_at_60: u32 = [0x60, 0x20],
    }
}

layout! {
    /// `destroy_mkey_in`.
    pub mod destroy_mkey_in: LayoutKind::Input { opcode: 0x202 }, 16 bytes, tiled {
        opcode: u16 = [0x00, 0x10],
        uid: u16 = [0x10, 0x10],
        reserved_at_20: u16 = [0x20, 0x10],
        op_mod: u16 = [0x30, 0x10],
        reserved_at_40: u8 = [0x40, 0x08],
        mkey_index: u32 = [0x48, 0x18],
        reserved_at_60: u32 = [0x60, 0x20],
    }
}

layout! {
    /// `destroy_mkey_out`.
    pub mod destroy_mkey_out: LayoutKind::Output, 16 bytes, tiled {
        status: u8 = [0x00, 0x08],
        reserved_at_8: u32 = [0x08, 0x18],
        syndrome: u32 = [0x20, 0x20],
        reserved_at_40: u64 = [0x40, 0x40],
    }
}

/// Byte offset of `memory_key_mkey_entry` inside `create_mkey_in`.
pub const MKC_OFFSET: usize = 16;
/// Byte offset of the MTT list inside `create_mkey_in`.
pub const MTT_OFFSET: usize = create_mkey_in::SIZE;
/// `MLX5_MKC_ACCESS_MODE_MTT`.
pub const ACCESS_MODE_MTT: u8 = 1;
/// The page size buffers are described in (`log_page_size = 12`).
pub const PAGE_SHIFT: u32 = 12;
/// 4 KiB.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// The largest buffer one mkey describes: `translations_octword_size` is
/// 32 bits of two-entry octwords, but a SAVE or LOAD never addresses more than
/// its 32-bit `size` field, so buffers are capped at 2^32 bytes = 2^20 pages.
pub const MAX_MKEY_PAGES: u32 = 1 << 20;

/// A memory key as SAVE and LOAD name it: `(mkey_index << 8) | variant`.
#[bitfield(u32, defmt = cfg(feature = "defmt"))]
#[derive(PartialEq, Eq, Hash)]
pub struct MkeyParts {
    /// `mkc.mkey_7_0`, the key's variant byte (the kernel leaves it 0).
    pub variant: u8,
    /// The index firmware returned from CREATE_MKEY (24 bits).
    #[bits(24)]
    pub index: u32,
}

/// A full memory key, as SAVE/LOAD's `mkey` field carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Mkey(pub u32);

impl Mkey {
    /// The key for `index` with variant 0, as the kernel builds it.
    pub fn from_index(index: u32) -> Self {
        Self(MkeyParts::new().with_index(index & 0xff_ffff).into_bits())
    }
    /// The index DESTROY_MKEY takes.
    pub fn index(self) -> u32 {
        MkeyParts::from_bits(self.0).index()
    }
}

/// One MTT entry: a page's bus address with READ/WRITE permission bits in
/// the low bits (rdma-core sets them; the kernel leaves them 0).
#[bitfield(u64, defmt = cfg(feature = "defmt"))]
#[derive(PartialEq, Eq)]
pub struct MttEntry {
    /// `MLX5_MTT_PERM_READ`.
    pub read: bool,
    /// `MLX5_MTT_PERM_WRITE`.
    pub write: bool,
    #[bits(10)]
    __: u16,
    /// The page frame number (bus address >> 12).
    #[bits(52)]
    pub frame: u64,
}

/// Bytes of a CREATE_MKEY input for `npages` pages: the fixed part plus one
/// 8-byte entry per page, rounded up to whole octwords as the kernel does.
pub const fn create_mkey_in_len(npages: u32) -> usize {
    // CAST: u32 -> usize is lossless on every target we build (>= 32-bit usize).
    let entries = (npages as usize).div_ceil(2).saturating_mul(2);
    MTT_OFFSET.saturating_add(entries.saturating_mul(8))
}

/// Why a CREATE_MKEY input could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MkeyEncodeError {
    /// The caller's buffer is too small; nothing was written.
    InsufficientSize {
        /// Bytes the input needs ([`create_mkey_in_len`]).
        required: usize,
    },
    /// No pages, or more than [`MAX_MKEY_PAGES`].
    BadPageCount(u64),
    /// A page address is not 4 KiB aligned.
    UnalignedPage(u64),
    /// The PD does not fit 24 bits.
    BadPd(u32),
}

impl core::fmt::Display for MkeyEncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::InsufficientSize { required } => {
                write!(f, "CREATE_MKEY input needs {required} bytes")
            }
            Self::BadPageCount(n) => write!(f, "bad page count {n} for one mkey"),
            Self::UnalignedPage(a) => write!(f, "page address {a:#x} is not 4 KiB aligned"),
            Self::BadPd(pd) => write!(f, "PD {pd:#x} does not fit 24 bits"),
        }
    }
}

impl core::error::Error for MkeyEncodeError {}

/// Encodes CREATE_MKEY in MTT mode for a buffer whose pages are at the bus
/// addresses `pages` yields (in order), into `buf`: header, mkey context
/// (`lr lw rr rw`, `qpn = 0xffffff`, `log_page_size = 12`, start address 0,
/// `len = npages * 4096`) and the MTT list. Returns the input length, which
/// is [`create_mkey_in_len`]`(npages)`.
///
/// ```
/// use mlx5vf_core::ifc::mkey::{create_mkey_in_len, encode_create_mkey_mtt};
/// use mlx5vf_core::ifc::pd::Pd;
/// let pages = [0x1000_0000u64, 0x1000_1000, 0x2000_0000];
/// let mut buf = [0u8; 512];
/// let len = encode_create_mkey_mtt(&mut buf, Pd(5), pages.iter().copied()).unwrap();
/// assert_eq!(len, create_mkey_in_len(3)); // 272 + 4 entries (rounded to octwords)
/// assert_eq!(&buf[272..280], &0x1000_0000u64.to_be_bytes());
/// ```
///
/// # Errors
/// See [`MkeyEncodeError`]; on error `buf` may hold a partial encoding only if
/// a page address was bad (the size is checked before anything is written).
pub fn encode_create_mkey_mtt<I>(buf: &mut [u8], pd: Pd, pages: I) -> Result<usize, MkeyEncodeError>
where
    I: ExactSizeIterator<Item = u64>,
{
    let count = pages.len();
    let npages = u32::try_from(count)
        .ok()
        .filter(|n| (1..=MAX_MKEY_PAGES).contains(n))
        // CAST: usize -> u64 is lossless.
        .ok_or(MkeyEncodeError::BadPageCount(count as u64))?;
    if pd.0 > 0xff_ffff {
        return Err(MkeyEncodeError::BadPd(pd.0));
    }
    let required = create_mkey_in_len(npages);
    let dst = buf
        .get_mut(..required)
        .ok_or(MkeyEncodeError::InsufficientSize { required })?;
    dst.fill(0);
    let octwords = npages.div_ceil(2);
    let fixed = encode_fixed(dst, pd, npages, octwords);
    // The only failure encode_fixed could report is a short buffer, which the
    // length check above already excluded.
    fixed.map_err(|_| MkeyEncodeError::InsufficientSize { required })?;
    let mtts = dst.get_mut(MTT_OFFSET..).unwrap_or_default();
    for (slot, addr) in mtts.chunks_exact_mut(8).zip(pages) {
        if addr % PAGE_SIZE != 0 {
            return Err(MkeyEncodeError::UnalignedPage(addr));
        }
        let entry = MttEntry::new().with_frame(addr >> PAGE_SHIFT);
        for (dst, b) in slot.iter_mut().zip(entry.into_bits().to_be_bytes()) {
            *dst = b;
        }
    }
    Ok(required)
}

fn encode_fixed(dst: &mut [u8], pd: Pd, npages: u32, octwords: u32) -> Result<(), FieldError> {
    write_in_header(dst, Opcode::CreateMkey, 0)?;
    create_mkey_in::translations_octword_actual_size.set(dst, octwords)?;
    let ctx = dst
        .get_mut(MKC_OFFSET..MKC_OFFSET + mkc::SIZE)
        .ok_or(FieldError::Truncated {
            field: "memory_key_mkey_entry",
            needed: MKC_OFFSET + mkc::SIZE,
            actual: 0,
        })?;
    mkc::access_mode_1_0.set(ctx, ACCESS_MODE_MTT)?;
    mkc::lr.set(ctx, true)?;
    mkc::lw.set(ctx, true)?;
    mkc::rr.set(ctx, true)?;
    mkc::rw.set(ctx, true)?;
    mkc::pd.set(ctx, pd.0)?;
    mkc::qpn.set(ctx, 0xff_ffff)?;
    // CAST: PAGE_SHIFT is 12.
    mkc::log_page_size.set(ctx, PAGE_SHIFT as u8)?;
    mkc::translations_octword_size.set(ctx, octwords)?;
    mkc::start_addr.set(ctx, 0)?;
    mkc::len.set(ctx, u64::from(npages) << PAGE_SHIFT)
}

/// Decodes a CREATE_MKEY output into the full key (variant 0).
///
/// # Errors
/// As [`Command::decode`].
pub fn decode_create_mkey_out(out: &[u8]) -> Result<Mkey, super::DecodeError> {
    let out = super::header::checked_output::<create_mkey_out::Bits>(Opcode::CreateMkey, 0, out)?;
    Ok(Mkey::from_index(out.get(create_mkey_out::mkey_index)))
}

/// DESTROY_MKEY.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestroyMkey {
    /// The key to destroy.
    pub mkey: Mkey,
}

impl Command for DestroyMkey {
    const OPCODE: Opcode = Opcode::DestroyMkey;
    type In = destroy_mkey_in::Bits;
    type Out = destroy_mkey_out::Bits;
    type Output = ();

    fn encode_fields(&self, input: &mut CheckedMut<'_, Self::In>) -> Result<(), EncodeError> {
        Ok(input.set(destroy_mkey_in::mkey_index, self.mkey.index())?)
    }
    fn decode_fields(&self, _out: Checked<'_, Self::Out>) {}
}
