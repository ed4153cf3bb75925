//! Mailbox chains: command bytes beyond the 16 the entry carries, in
//! 576-byte blocks (`mlx5_cmd_prot_block`, `reference/mlx5-ifc.md` §4.3).
//!
//! ```text
//! 0x000 data[512]   0x200 reserved[48]   0x230 next (be64)
//! 0x238 block_num (be32)   0x23d token   0x23e ctrl_sig   0x23f sig
//! ```
//!
//! A chain lives in one caller-owned *area*, contiguous in the caller's
//! memory and at the bus address `area_addr`: block `i` sits at byte
//! `i * BLOCK_STRIDE` and bus address `area_addr + i * BLOCK_STRIDE`, and
//! links to block `i + 1` (the last to 0). The driver never follows a
//! `next` it reads back; it checks that each is still the one it wrote.

use super::entry::block_aligned;
use super::error::CmdqError;
use super::sig;
use super::{BLOCK_DATA, BLOCK_SIZE, BLOCK_STRIDE, Checksums, INLINE_LEN, Token};

/// Byte offsets inside a block.
pub mod field {
    use core::ops::Range;

    /// `data[512]`.
    pub const DATA: Range<usize> = 0x000..0x200;
    /// `next`, be64.
    pub const NEXT: Range<usize> = 0x230..0x238;
    /// `block_num`, be32.
    pub const BLOCK_NUM: Range<usize> = 0x238..0x23c;
    /// `token`.
    pub const TOKEN: usize = 0x23d;
    /// `ctrl_sig`: makes bytes `0x200..=0x23e` XOR to `0xff`.
    pub const CTRL_SIG: usize = 0x23e;
    /// `sig`: makes all 576 bytes XOR to `0xff`.
    pub const SIG: usize = 0x23f;
    /// The bytes `ctrl_sig` covers.
    pub const CTRL: Range<usize> = 0x200..0x23f;
}

/// Blocks a command of `len` bytes needs: `ceil((len - 16) / 512)`, 0 for
/// 16 bytes or fewer.
pub const fn blocks_for(len: usize) -> usize {
    len.saturating_sub(INLINE_LEN).div_ceil(BLOCK_DATA)
}

/// Bytes of area a chain for `len` bytes occupies (0 when no chain).
pub const fn area_len(len: usize) -> usize {
    let blocks = blocks_for(len);
    if blocks == 0 {
        0
    } else {
        // The last block needs only its 576 bytes.
        blocks
            .saturating_sub(1)
            .saturating_mul(BLOCK_STRIDE)
            .saturating_add(BLOCK_SIZE)
    }
}

/// The bus address block `index` of a chain at `area_addr` has, and the
/// one its `next` holds (0 for the last of `blocks`).
fn links(area_addr: u64, index: usize, blocks: usize) -> Result<u64, CmdqError> {
    let next = index.saturating_add(1);
    if next >= blocks {
        return Ok(0);
    }
    // CAST: usize -> u64 is lossless on every target we build.
    (next as u64)
        .checked_mul(BLOCK_STRIDE as u64)
        .and_then(|off| area_addr.checked_add(off))
        .ok_or(CmdqError::BadAreaAddress)
}

/// Checks an area for the chain of a `len`-byte command and returns its
/// block count (at most `u32::MAX / 512`: `len` fits 32 bits).
fn check_area(area_len_have: usize, area_addr: u64, len: usize) -> Result<usize, CmdqError> {
    // The entry's 32-bit length fields bound every chain.
    if u32::try_from(len).is_err() {
        return Err(CmdqError::BadLength { len });
    }
    let need = area_len(len);
    if area_len_have < need {
        return Err(CmdqError::AreaTooSmall { required: need });
    }
    if need > 0 && (area_addr == 0 || !block_aligned(area_addr)) {
        return Err(CmdqError::BadAreaAddress);
    }
    // CAST: usize -> u64 is lossless on every target we build.
    if area_addr.checked_add(need as u64).is_none() {
        return Err(CmdqError::BadAreaAddress);
    }
    Ok(blocks_for(len))
}

/// Block `index` of an area (in bounds once [`check_area`] passed).
fn block(area: &[u8], index: usize) -> Result<&[u8], CmdqError> {
    let start = index.saturating_mul(BLOCK_STRIDE);
    area.get(start..start.saturating_add(BLOCK_SIZE))
        .ok_or(CmdqError::AreaTooSmall {
            required: start.saturating_add(BLOCK_SIZE),
        })
}

fn block_mut(area: &mut [u8], index: usize) -> Result<&mut [u8], CmdqError> {
    let start = index.saturating_mul(BLOCK_STRIDE);
    area.get_mut(start..start.saturating_add(BLOCK_SIZE))
        .ok_or(CmdqError::AreaTooSmall {
            required: start.saturating_add(BLOCK_SIZE),
        })
}

/// Copies `src` to the front of `dst[range]` (zip: never panics).
fn put(dst: &mut [u8], range: core::ops::Range<usize>, src: &[u8]) {
    if let Some(d) = dst.get_mut(range) {
        for (d, s) in d.iter_mut().zip(src) {
            *d = *s;
        }
    }
}

fn set_byte(dst: &mut [u8], at: usize, value: u8) {
    if let Some(b) = dst.get_mut(at) {
        *b = value;
    }
}

/// The data, `next`, `block_num` and token of block `index`; the
/// signatures when checksums are on.
fn write_block(
    blk: &mut [u8],
    data: &[u8],
    next: u64,
    index: usize,
    token: Token,
    checksums: Checksums,
) {
    blk.fill(0);
    put(blk, field::DATA, data);
    put(blk, field::NEXT, &next.to_be_bytes());
    // CAST: a chain has at most u32::MAX / 512 blocks (lengths are u32).
    put(blk, field::BLOCK_NUM, &(index as u32).to_be_bytes());
    set_byte(blk, field::TOKEN, token.raw());
    if checksums == Checksums::On {
        sign_block(blk);
    }
}

/// Sets `ctrl_sig` then `sig` of a block whose other bytes are final.
pub(crate) fn sign_block(blk: &mut [u8]) {
    set_byte(blk, field::CTRL_SIG, 0);
    set_byte(blk, field::SIG, 0);
    let ctrl = blk.get(field::CTRL).map_or(0, sig::signature);
    set_byte(blk, field::CTRL_SIG, ctrl);
    let all = blk.get(..BLOCK_SIZE).map_or(0, sig::signature);
    set_byte(blk, field::SIG, all);
}

/// Writes the input chain for `input` (its bytes from 16 on) into `area`.
///
/// # Errors
/// [`CmdqError::AreaTooSmall`] or [`CmdqError::BadAreaAddress`]; the area
/// is untouched then.
pub fn write_input_chain(
    area: &mut [u8],
    area_addr: u64,
    input: &[u8],
    token: Token,
    checksums: Checksums,
) -> Result<(), CmdqError> {
    let blocks = check_area(area.len(), area_addr, input.len())?;
    let rest = input.get(INLINE_LEN..).unwrap_or(&[]);
    for (index, data) in rest.chunks(BLOCK_DATA).enumerate().take(blocks) {
        let next = links(area_addr, index, blocks)?;
        write_block(block_mut(area, index)?, data, next, index, token, checksums);
    }
    Ok(())
}

/// Prepares the output chain for `outlen` bytes in `area`: zeroed data,
/// links, block numbers and the token (firmware fills the data).
///
/// # Errors
/// As [`write_input_chain`].
pub fn prepare_output_chain(
    area: &mut [u8],
    area_addr: u64,
    outlen: usize,
    token: Token,
    checksums: Checksums,
) -> Result<(), CmdqError> {
    let blocks = check_area(area.len(), area_addr, outlen)?;
    for index in 0..blocks {
        let next = links(area_addr, index, blocks)?;
        write_block(block_mut(area, index)?, &[], next, index, token, checksums);
    }
    Ok(())
}

fn read_be32(blk: &[u8], range: core::ops::Range<usize>) -> u32 {
    blk.get(range)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_be_bytes)
}

fn read_be64(blk: &[u8], range: core::ops::Range<usize>) -> u64 {
    blk.get(range)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

/// Reads the output chain firmware filled: checks every block (number,
/// token, link, signatures with checksums on) and copies its data into
/// `out[16..]` (`out.len()` is the command's `outlen`; `out[..16]` is the
/// caller's, from the entry).
///
/// # Errors
/// [`CmdqError::BlockNumber`], [`CmdqError::BlockToken`],
/// [`CmdqError::BadBlockSignature`], [`CmdqError::ShortChain`] (a `next`
/// of 0 before the last block), [`CmdqError::BlockLink`] (any other
/// changed `next`), or the area errors of [`write_input_chain`]. `out` may
/// be partly written then; its content means nothing.
pub fn read_output_chain(
    area: &[u8],
    area_addr: u64,
    out: &mut [u8],
    token: Token,
    checksums: Checksums,
) -> Result<(), CmdqError> {
    let blocks = check_area(area.len(), area_addr, out.len())?;
    // CAST: blocks <= u32::MAX / 512 (lengths are u32), below.
    let needed = blocks as u32;
    let dst = out.get_mut(INLINE_LEN..).unwrap_or(&mut []);
    for (index, chunk) in dst.chunks_mut(BLOCK_DATA).enumerate().take(blocks) {
        let blk = block(area, index)?;
        // CAST: as above.
        let number = index as u32;
        let found = read_be32(blk, field::BLOCK_NUM);
        if found != number {
            return Err(CmdqError::BlockNumber {
                block: number,
                found,
            });
        }
        let tok = blk.get(field::TOKEN).copied().unwrap_or(0);
        if tok != token.raw() {
            return Err(CmdqError::BlockToken {
                block: number,
                expected: token.raw(),
                found: tok,
            });
        }
        if checksums == Checksums::On
            && !(blk.get(field::CTRL).is_some_and(sig::verifies) && sig::verifies(blk))
        {
            return Err(CmdqError::BadBlockSignature { block: number });
        }
        let next = read_be64(blk, field::NEXT);
        let expected = links(area_addr, index, blocks)?;
        if next != expected {
            return Err(if next == 0 {
                CmdqError::ShortChain {
                    blocks: number.saturating_add(1),
                    needed,
                }
            } else {
                CmdqError::BlockLink { block: number }
            });
        }
        let data = blk.get(field::DATA).unwrap_or(&[]);
        for (d, s) in chunk.iter_mut().zip(data) {
            *d = *s;
        }
    }
    Ok(())
}
