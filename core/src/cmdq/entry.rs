//! The 64-byte command-queue entry (`mlx5_cmd_layout`,
//! `reference/mlx5-ifc.md` §4.2): what the driver writes to post a command
//! and what it checks when firmware hands the entry back.
//!
//! ```text
//! 0x00 type (7)   0x04 inlen (be32)   0x08 in_ptr (be64)
//! 0x10 in[16]     0x20 out[16]        0x30 out_ptr (be64)
//! 0x38 outlen (be32)  0x3c token  0x3d sig  0x3f status_own
//! ```

use super::error::{CmdqError, DeliveryStatus};
use super::sig;
use super::{BLOCK_STRIDE, CMD_TYPE_PCI, Checksums, ENTRY_SIZE, INLINE_LEN, Token};

/// Byte offsets inside an entry.
pub mod field {
    use core::ops::Range;

    /// `type`.
    pub const TYPE: usize = 0x00;
    /// `inlen`, be32.
    pub const INLEN: Range<usize> = 0x04..0x08;
    /// `in_ptr`, be64.
    pub const IN_PTR: Range<usize> = 0x08..0x10;
    /// `in[]`: the first 16 input bytes.
    pub const IN: Range<usize> = 0x10..0x20;
    /// `out[]`: the first 16 output bytes.
    pub const OUT: Range<usize> = 0x20..0x30;
    /// `out_ptr`, be64.
    pub const OUT_PTR: Range<usize> = 0x30..0x38;
    /// `outlen`, be32.
    pub const OUTLEN: Range<usize> = 0x38..0x3c;
    /// `token`.
    pub const TOKEN: usize = 0x3c;
    /// `sig`.
    pub const SIG: usize = 0x3d;
    /// `status_own`: bit 0 owner (1 = hardware), bits 7:1 delivery status.
    pub const STATUS_OWN: usize = 0x3f;
}

/// `status_own` bit 0: hardware owns the entry.
pub const OWNER_HW: u8 = 1;

/// What a command looks like on the queue: its lengths and where its
/// mailbox chains start. The queue keeps it to check the entry firmware
/// hands back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Descriptor {
    inlen: u32,
    in_ptr: u64,
    outlen: u32,
    out_ptr: u64,
}

/// Whether a bus address is aligned to [`BLOCK_STRIDE`] (a power of two).
pub(crate) const fn block_aligned(addr: u64) -> bool {
    // CAST: BLOCK_STRIDE is a small constant.
    addr & (BLOCK_STRIDE as u64).saturating_sub(1) == 0
}

const _: () = assert!(BLOCK_STRIDE.is_power_of_two());

/// Largest command length the 32-bit `inlen`/`outlen` fields carry.
const MAX_LEN: usize = u32::MAX as usize;

impl Descriptor {
    /// A command of `inlen` input and `outlen` output bytes whose chains
    /// (needed beyond 16 bytes) start at bus addresses `in_area` and
    /// `out_area`.
    ///
    /// # Errors
    /// [`CmdqError::BadLength`] for a length below 16 or above `u32::MAX`;
    /// [`CmdqError::BadAreaAddress`] when a chain is needed and its address
    /// is missing, zero or not [`BLOCK_STRIDE`]-aligned.
    pub fn new(
        inlen: usize,
        in_area: Option<u64>,
        outlen: usize,
        out_area: Option<u64>,
    ) -> Result<Self, CmdqError> {
        let ptr = |len: usize, area: Option<u64>| -> Result<u64, CmdqError> {
            if !(INLINE_LEN..=MAX_LEN).contains(&len) {
                return Err(CmdqError::BadLength { len });
            }
            if len == INLINE_LEN {
                return Ok(0);
            }
            match area {
                Some(a) if a != 0 && block_aligned(a) => Ok(a),
                _ => Err(CmdqError::BadAreaAddress),
            }
        };
        let in_ptr = ptr(inlen, in_area)?;
        let out_ptr = ptr(outlen, out_area)?;
        // CAST: both lengths were checked to be <= u32::MAX above.
        Ok(Self {
            inlen: inlen as u32,
            in_ptr,
            outlen: outlen as u32,
            out_ptr,
        })
    }

    /// Input bytes.
    pub const fn inlen(&self) -> usize {
        // CAST: u32 -> usize is lossless on every target we build.
        self.inlen as usize
    }

    /// Output bytes.
    pub const fn outlen(&self) -> usize {
        // CAST: as above.
        self.outlen as usize
    }

    /// Bus address of the first input block (0 when none).
    pub const fn in_ptr(&self) -> u64 {
        self.in_ptr
    }

    /// Bus address of the first output block (0 when none).
    pub const fn out_ptr(&self) -> u64 {
        self.out_ptr
    }

    /// Writes the entry posting this command: `type` 7, lengths, pointers,
    /// the first 16 input bytes, zeroed `out[]`, the token, owner =
    /// hardware, and the signature (always, as Linux does; it is checked by
    /// firmware only with checksums on).
    ///
    /// # Errors
    /// [`CmdqError::BadLength`] when `input` is not this descriptor's input.
    pub fn encode(
        &self,
        entry: &mut [u8; ENTRY_SIZE],
        input: &[u8],
        token: Token,
    ) -> Result<(), CmdqError> {
        if input.len() != self.inlen() {
            return Err(CmdqError::BadLength { len: input.len() });
        }
        let head = input
            .get(..INLINE_LEN)
            .ok_or(CmdqError::BadLength { len: input.len() })?;
        entry.fill(0);
        put(entry, field::TYPE..field::TYPE + 1, &[CMD_TYPE_PCI]);
        put(entry, field::INLEN, &self.inlen.to_be_bytes());
        put(entry, field::IN_PTR, &self.in_ptr.to_be_bytes());
        put(entry, field::IN, head);
        put(entry, field::OUT_PTR, &self.out_ptr.to_be_bytes());
        put(entry, field::OUTLEN, &self.outlen.to_be_bytes());
        put(entry, field::TOKEN..field::TOKEN + 1, &[token.raw()]);
        put(entry, field::STATUS_OWN..field::STATUS_OWN + 1, &[OWNER_HW]);
        let signature = sig::signature(entry);
        put(entry, field::SIG..field::SIG + 1, &[signature]);
        Ok(())
    }
}

/// Copies `src` into `entry[range]` (lengths agree by construction; a zip,
/// so a mismatch would write less rather than panic).
fn put(entry: &mut [u8; ENTRY_SIZE], range: core::ops::Range<usize>, src: &[u8]) {
    if let Some(dst) = entry.get_mut(range) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    }
}

fn byte(entry: &[u8; ENTRY_SIZE], at: usize) -> u8 {
    entry.get(at).copied().unwrap_or(0)
}

fn be32(entry: &[u8; ENTRY_SIZE], range: core::ops::Range<usize>) -> u32 {
    entry
        .get(range)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_be_bytes)
}

fn be64(entry: &[u8; ENTRY_SIZE], range: core::ops::Range<usize>) -> u64 {
    entry
        .get(range)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

/// Whether hardware still owns the entry.
pub fn owned_by_hardware(entry: &[u8; ENTRY_SIZE]) -> bool {
    byte(entry, field::STATUS_OWN) & OWNER_HW != 0
}

/// Judges an entry firmware handed back (owner bit clear) against what was
/// posted, and returns the first 16 output bytes.
///
/// Checks, in order: delivery status (a known non-zero one is
/// [`CmdqError::Delivery`], an unknown one
/// [`CmdqError::UnknownDeliveryStatus`]), the token, the descriptor (type,
/// lengths, pointers), and with checksums on the signature.
///
/// # Errors
/// As listed; [`CmdqError::BadOwnership`] is the caller's (this is only
/// called once the owner bit is clear, and says nothing about the slot).
pub fn decode_completion(
    entry: &[u8; ENTRY_SIZE],
    posted: &Descriptor,
    token: Token,
    checksums: Checksums,
) -> Result<[u8; INLINE_LEN], CmdqError> {
    let status = byte(entry, field::STATUS_OWN) >> 1;
    match DeliveryStatus::from(status) {
        DeliveryStatus::Ok => {}
        DeliveryStatus::Unknown(code) => return Err(CmdqError::UnknownDeliveryStatus(code)),
        known => return Err(CmdqError::Delivery(known)),
    }
    let found = byte(entry, field::TOKEN);
    if found != token.raw() {
        return Err(CmdqError::WrongToken {
            expected: token.raw(),
            found,
        });
    }
    let changed = |field| Err(CmdqError::DescriptorChanged { field });
    if byte(entry, field::TYPE) != CMD_TYPE_PCI {
        return changed("type");
    }
    if be32(entry, field::INLEN) != posted.inlen {
        return changed("inlen");
    }
    if be32(entry, field::OUTLEN) != posted.outlen {
        return changed("outlen");
    }
    if be64(entry, field::IN_PTR) != posted.in_ptr {
        return changed("in_ptr");
    }
    if be64(entry, field::OUT_PTR) != posted.out_ptr {
        return changed("out_ptr");
    }
    if checksums == Checksums::On && !sig::verifies(entry) {
        return Err(CmdqError::BadEntrySignature);
    }
    let mut out = [0u8; INLINE_LEN];
    if let Some(src) = entry.get(field::OUT) {
        for (d, s) in out.iter_mut().zip(src) {
            *d = *s;
        }
    }
    Ok(out)
}
