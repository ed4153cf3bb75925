//! `cmdq_decode`: what [`mlx5vf_core::cmdq`] makes of command-queue entries
//! and mailbox chains a device hands back, judged by an independent
//! reading of `reference/mlx5-ifc.md` §4.2–4.4.
//!
//! # Input
//! A [`CmdqHead`] (built with `arbitrary`), then 64 bytes of entry, then the
//! output area. With [`CmdqHead::XOR`] set, the entry and area bytes are
//! XOR masks over what a well-behaved firmware would have left (so small
//! inputs reach the deep checks); otherwise they are the bytes as read.
//!
//! # Checks
//! - `CmdQueue::handle_entry` on the entry gives exactly the oracle's
//!   verdict: `Pending`, `BadOwnership` (signalled but owned), `Timeout`
//!   (owned past the deadline), `Delivery` for a known delivery status,
//!   `UnknownDeliveryStatus` for any other, `WrongToken`,
//!   `DescriptorChanged` naming the first changed field,
//!   `BadEntrySignature` (checksums on), else `Done` with bytes 0x20..0x30;
//!   and the slot is free again exactly when firmware returned the entry.
//! - `read_output_chain` on the area gives the oracle's verdict for the
//!   first bad block (number, token, signatures, link: `ShortChain` for a
//!   zero link, `BlockLink` for another), else the blocks' data in order.
//! - `write_input_chain` of the input bytes, walked by following each
//!   block's `next`, gives the input back; with checksums every block
//!   checks. `prepare_output_chain` then a firmware fill reads back whole.
//! - `Display` of every error never panics.

use std::fmt::Write as _;

use arbitrary::{Arbitrary, Unstructured};
use mlx5vf_core::cmdq::entry::Descriptor;
use mlx5vf_core::cmdq::iseg::Geometry;
use mlx5vf_core::cmdq::mailbox::{
    area_len, blocks_for, prepare_output_chain, read_output_chain, write_input_chain,
};
use mlx5vf_core::cmdq::{
    BLOCK_SIZE, BLOCK_STRIDE, Checksums, CmdQueue, CmdqError, DeliveryStatus, ENTRY_SIZE, Instant,
    Progress, SlotClass, Token,
};

/// Longest command the target builds (a 16-block chain either way).
pub const MAX_LEN: usize = 16 + 16 * 512;
/// Bus address of the input chain.
const IN_AREA: u64 = 0x7_0000_0000;
/// Bus address of the output chain.
const OUT_AREA: u64 = 0x9_0000_0400;
/// The command's deadline (ns after the clock's origin).
const DEADLINE_NS: u64 = 1_000_000;

/// The structured part of the input.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmdqHead {
    /// Input length (16 + this modulo `MAX_LEN - 15`).
    pub inlen: u16,
    /// Output length, likewise.
    pub outlen: u16,
    /// Flags: [`CmdqHead::CHECKSUMS`], [`CmdqHead::SIGNALLED`],
    /// [`CmdqHead::LATE`], [`CmdqHead::XOR`].
    pub flags: u8,
    /// Commands completed on the queue first (token variety), modulo 64.
    pub warm: u8,
    /// `log_cmdq_size`, modulo 6.
    pub log_size: u8,
}

impl CmdqHead {
    /// Signatures written and checked.
    pub const CHECKSUMS: u8 = 1;
    /// The device signalled the slot complete.
    pub const SIGNALLED: u8 = 2;
    /// The entry is looked at after the deadline.
    pub const LATE: u8 = 4;
    /// Entry and area bytes are masks over a good completion.
    pub const XOR: u8 = 8;

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn len(raw: u16) -> usize {
        16 + usize::from(raw) % (MAX_LEN - 15)
    }
}

/// The input's parts: the head and the bytes after it.
pub fn decode(data: &[u8]) -> Option<(CmdqHead, &[u8])> {
    let mut u = Unstructured::new(data);
    let head = CmdqHead::arbitrary(&mut u).ok()?;
    Some((head, u.take_rest()))
}

fn xor8(b: &[u8]) -> u8 {
    b.iter().fold(0, |a, x| a ^ x)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// The target. See the module documentation.
pub fn run(data: &[u8]) {
    let Some((head, rest)) = decode(data) else {
        return;
    };
    let checksums = if head.has(CmdqHead::CHECKSUMS) {
        Checksums::On
    } else {
        Checksums::Off
    };
    let inlen = CmdqHead::len(head.inlen);
    let outlen = CmdqHead::len(head.outlen);
    let (entry_bytes, area_bytes) = rest.split_at(rest.len().min(ENTRY_SIZE));
    let input: Vec<u8> = (0..inlen)
        .map(|i| area_bytes.get(i).copied().unwrap_or(i as u8))
        .collect();
    entry(&head, checksums, &input, outlen, entry_bytes);
    output_chain(&head, checksums, outlen, area_bytes);
    input_chain(checksums, &input);
}

fn entry(head: &CmdqHead, checksums: Checksums, input: &[u8], outlen: usize, bytes: &[u8]) {
    let geometry = Geometry::new(head.log_size % 6, 6).unwrap();
    let mut q = CmdQueue::new(geometry, checksums);
    let d = Descriptor::new(input.len(), Some(IN_AREA), outlen, Some(OUT_AREA)).unwrap();
    let t0 = Instant::from_nanos(0);
    let timeout = std::time::Duration::from_nanos(DEADLINE_NS);
    for _ in 0..head.warm % 64 {
        let p = q.post(SlotClass::Command, 1, d, t0, timeout).unwrap();
        q.abandon(p.slot());
        q.reset();
    }
    let p = q.post(SlotClass::Command, 0x100, d, t0, timeout).unwrap();
    let mut posted = [0u8; ENTRY_SIZE];
    p.encode_entry(&mut posted, input).unwrap();
    assert_eq!(xor8(&posted), 0xff, "a posted entry is signed");
    assert_eq!(posted[0x3f], 1, "posted to hardware");
    let mut e = [0u8; ENTRY_SIZE];
    if head.has(CmdqHead::XOR) {
        // A good completion: owner clear, re-signed; then the masks.
        e = posted;
        e[0x3f] = 0;
        e[0x3d] = 0;
        e[0x3d] = !xor8(&e);
        for (x, m) in e.iter_mut().zip(bytes) {
            *x ^= m;
        }
    } else {
        e[..bytes.len()].copy_from_slice(bytes);
    }
    let signalled = head.has(CmdqHead::SIGNALLED);
    let now = Instant::from_nanos(if head.has(CmdqHead::LATE) {
        DEADLINE_NS
    } else {
        DEADLINE_NS - 1
    });
    let got = q.handle_entry(p.slot(), &e, signalled, now);
    let want = oracle_entry(
        &e,
        &posted,
        p.slot(),
        signalled,
        head.has(CmdqHead::LATE),
        checksums,
    );
    assert_eq!(got, want, "entry {e:02x?}");
    let returned = e[0x3f] & 1 == 0;
    let pending = want == Ok(Progress::Pending);
    assert_eq!(q.is_in_flight(p.slot()), pending);
    assert_eq!(q.in_flight() != 0, pending);
    assert_eq!(
        q.stuck() != 0,
        !returned && !pending,
        "stuck exactly when given up on"
    );
    if let Err(err) = got {
        let _ = write!(String::new(), "{err} {:?}", err.errno());
    }
}

/// The independent verdict on a read-back entry.
fn oracle_entry(
    e: &[u8; ENTRY_SIZE],
    posted: &[u8; ENTRY_SIZE],
    slot: u8,
    signalled: bool,
    late: bool,
    checksums: Checksums,
) -> Result<Progress, CmdqError> {
    if e[0x3f] & 1 == 1 {
        return if signalled {
            Err(CmdqError::BadOwnership { slot })
        } else if late {
            Err(CmdqError::Timeout {
                slot,
                opcode: 0x100,
            })
        } else {
            Ok(Progress::Pending)
        };
    }
    let status = e[0x3f] >> 1;
    const KNOWN: [u8; 11] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0x10];
    if !KNOWN.contains(&status) {
        return Err(CmdqError::UnknownDeliveryStatus(status));
    }
    if status != 0 {
        return Err(CmdqError::Delivery(DeliveryStatus::from(status)));
    }
    if e[0x3c] != posted[0x3c] {
        return Err(CmdqError::WrongToken {
            expected: posted[0x3c],
            found: e[0x3c],
        });
    }
    for (field, range) in [
        ("type", 0..1),
        ("inlen", 4..8),
        ("outlen", 0x38..0x3c),
        ("in_ptr", 8..0x10),
        ("out_ptr", 0x30..0x38),
    ] {
        if e[range.clone()] != posted[range] {
            return Err(CmdqError::DescriptorChanged { field });
        }
    }
    if checksums == Checksums::On && xor8(e) != 0xff {
        return Err(CmdqError::BadEntrySignature);
    }
    Ok(Progress::Done(e[0x20..0x30].try_into().unwrap()))
}

fn output_chain(head: &CmdqHead, checksums: Checksums, outlen: usize, bytes: &[u8]) {
    let token = Token::new(0x5a).unwrap();
    let mut area = vec![0u8; area_len(outlen)];
    if head.has(CmdqHead::XOR) {
        prepare_output_chain(&mut area, OUT_AREA, outlen, token, checksums).unwrap();
        for (x, m) in area.iter_mut().zip(bytes) {
            *x ^= m;
        }
    } else {
        let n = bytes.len().min(area.len());
        area[..n].copy_from_slice(&bytes[..n]);
    }
    let mut out = vec![0u8; outlen];
    let got = read_output_chain(&area, OUT_AREA, &mut out, token, checksums);
    let want = oracle_chain(&area, outlen, token.raw(), checksums);
    match (&got, &want) {
        (Ok(()), Ok(data)) => assert_eq!(&out[16..], &data[..], "output data"),
        _ => assert_eq!(got, want.map(|_| ()), "output chain"),
    }
    if let Err(err) = got {
        let _ = write!(String::new(), "{err}");
    }
}

/// The independent verdict on an output chain, and its data when good.
fn oracle_chain(
    area: &[u8],
    outlen: usize,
    token: u8,
    checksums: Checksums,
) -> Result<Vec<u8>, CmdqError> {
    let needed = blocks_for(outlen);
    let mut data = Vec::new();
    for i in 0..needed {
        let b = &area[i * BLOCK_STRIDE..i * BLOCK_STRIDE + BLOCK_SIZE];
        let block = i as u32;
        if be32(b, 0x238) != block {
            return Err(CmdqError::BlockNumber {
                block,
                found: be32(b, 0x238),
            });
        }
        if b[0x23d] != token {
            return Err(CmdqError::BlockToken {
                block,
                expected: token,
                found: b[0x23d],
            });
        }
        if checksums == Checksums::On && (xor8(&b[0x200..0x23f]) != 0xff || xor8(b) != 0xff) {
            return Err(CmdqError::BadBlockSignature { block });
        }
        let expected = if i + 1 < needed {
            OUT_AREA + ((i + 1) * BLOCK_STRIDE) as u64
        } else {
            0
        };
        let next = be64(b, 0x230);
        if next != expected {
            return Err(if next == 0 {
                CmdqError::ShortChain {
                    blocks: block + 1,
                    needed: needed as u32,
                }
            } else {
                CmdqError::BlockLink { block }
            });
        }
        data.extend_from_slice(&b[..512]);
    }
    data.truncate(outlen - 16);
    Ok(data)
}

fn input_chain(checksums: Checksums, input: &[u8]) {
    let token = Token::new(0xc3).unwrap();
    let mut area = vec![0u8; area_len(input.len())];
    write_input_chain(&mut area, IN_AREA, input, token, checksums).unwrap();
    // Walk it as firmware does: follow `next` from the first block.
    let mut got = input[..16].to_vec();
    let mut at = if area.is_empty() { 0 } else { IN_AREA };
    let mut number = 0u32;
    while at != 0 {
        let off = usize::try_from(at - IN_AREA).unwrap();
        let b = &area[off..off + BLOCK_SIZE];
        assert_eq!(be32(b, 0x238), number, "block_num");
        assert_eq!(b[0x23d], token.raw(), "block token");
        if checksums == Checksums::On {
            assert_eq!(xor8(&b[0x200..0x23f]), 0xff, "ctrl_sig");
            assert_eq!(xor8(b), 0xff, "sig");
        }
        got.extend_from_slice(&b[..512]);
        at = be64(b, 0x230);
        number += 1;
    }
    assert_eq!(number as usize, blocks_for(input.len()));
    got.truncate(input.len());
    assert_eq!(got, input, "input chain");
    // And an output chain a firmware fills reads back whole.
    let mut area = vec![0u8; area_len(input.len())];
    prepare_output_chain(&mut area, OUT_AREA, input.len(), token, checksums).unwrap();
    for (i, chunk) in input[16..].chunks(512).enumerate() {
        let b = &mut area[i * BLOCK_STRIDE..i * BLOCK_STRIDE + BLOCK_SIZE];
        b[..chunk.len()].copy_from_slice(chunk);
        if checksums == Checksums::On {
            b[0x23e] = 0;
            b[0x23f] = 0;
            b[0x23e] = !xor8(&b[0x200..0x23f]);
            b[0x23f] = !xor8(b);
        }
    }
    let mut out = vec![0u8; input.len()];
    out[..16].copy_from_slice(&input[..16]);
    read_output_chain(&area, OUT_AREA, &mut out, token, checksums).unwrap();
    assert_eq!(out, input, "output chain round trip");
}
