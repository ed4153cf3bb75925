//! Golden layouts and every refusal of the command-queue codec.

use core::time::Duration;
use std::vec;
use std::vec::Vec;

use super::entry::{Descriptor, OWNER_HW, field as ef};
use super::health::{HealthMonitor, HealthSample};
use super::iseg::{self, Geometry, NicInterface};
use super::mailbox::{self, field as bf};
use super::*;

const AREA_IN: u64 = 0x1_0000_0400;
const AREA_OUT: u64 = 0x2_0000_0000;

fn t(ms: u64) -> Instant {
    Instant::from_nanos(ms * 1_000_000)
}

fn queue(checksums: Checksums) -> CmdQueue {
    CmdQueue::new(Geometry::new(5, 6).unwrap(), checksums)
}

/// What firmware does with an entry: clear the owner bit, set a delivery
/// status, write `out[]`, re-sign.
fn complete(entry: &mut [u8; ENTRY_SIZE], delivery: u8, out: &[u8; 16]) {
    entry[ef::OUT].copy_from_slice(out);
    entry[ef::STATUS_OWN] = delivery << 1;
    entry[ef::SIG] = 0;
    entry[ef::SIG] = !entry.iter().fold(0, |a, b| a ^ b);
}

#[test]
fn golden_entry_for_alloc_pd() {
    let mut input = [0u8; 16];
    input[..2].copy_from_slice(&0x800u16.to_be_bytes());
    let d = Descriptor::new(16, None, 16, None).unwrap();
    let mut e = [0xeeu8; ENTRY_SIZE];
    d.encode(&mut e, &input, Token::new(0x5a).unwrap()).unwrap();
    let mut want = [0u8; ENTRY_SIZE];
    want[0x00] = 0x07;
    want[0x07] = 0x10;
    want[0x10] = 0x08;
    want[0x3b] = 0x10;
    want[0x3c] = 0x5a;
    // !(07 ^ 10 ^ 08 ^ 10 ^ 5a ^ 01)
    want[0x3d] = 0xab;
    want[0x3f] = 0x01;
    assert_eq!(e, want);
}

#[test]
fn golden_entry_with_chains() {
    let input = [0x11u8; 600];
    let d = Descriptor::new(600, Some(AREA_IN), 4112, Some(AREA_OUT)).unwrap();
    let mut e = [0u8; ENTRY_SIZE];
    d.encode(&mut e, &input, Token::new(3).unwrap()).unwrap();
    assert_eq!(&e[ef::INLEN], &600u32.to_be_bytes());
    assert_eq!(&e[ef::IN_PTR], &AREA_IN.to_be_bytes());
    assert_eq!(&e[ef::IN], &[0x11; 16]);
    assert_eq!(&e[ef::OUT], &[0; 16]);
    assert_eq!(&e[ef::OUT_PTR], &AREA_OUT.to_be_bytes());
    assert_eq!(&e[ef::OUTLEN], &4112u32.to_be_bytes());
    assert_eq!(e[ef::STATUS_OWN], OWNER_HW);
    assert_eq!(e.iter().fold(0, |a, b| a ^ b), 0xff, "signed");
}

#[test]
fn descriptors_refuse_bad_lengths_and_areas() {
    assert_eq!(
        Descriptor::new(15, None, 16, None),
        Err(CmdqError::BadLength { len: 15 })
    );
    assert_eq!(
        Descriptor::new(17, None, 16, None),
        Err(CmdqError::BadAreaAddress)
    );
    assert_eq!(
        Descriptor::new(17, Some(0x1200), 16, None),
        Err(CmdqError::BadAreaAddress)
    );
    assert_eq!(
        Descriptor::new(16, None, 17, Some(0)),
        Err(CmdqError::BadAreaAddress)
    );
    // Inline-only commands ignore an area they do not need.
    let d = Descriptor::new(16, Some(0x1234), 16, None).unwrap();
    assert_eq!(d.in_ptr(), 0);
    let mut e = [0u8; ENTRY_SIZE];
    assert_eq!(
        d.encode(&mut e, &[0; 20], Token::new(1).unwrap()),
        Err(CmdqError::BadLength { len: 20 })
    );
}

#[test]
fn chain_sizes() {
    assert_eq!(mailbox::blocks_for(0), 0);
    assert_eq!(mailbox::blocks_for(16), 0);
    assert_eq!(mailbox::blocks_for(17), 1);
    assert_eq!(mailbox::blocks_for(16 + 512), 1);
    assert_eq!(mailbox::blocks_for(16 + 513), 2);
    // query_hca_cap_out: 4112 bytes = 16 + 8 blocks.
    assert_eq!(mailbox::blocks_for(4112), 8);
    assert_eq!(mailbox::area_len(4112), 7 * 1024 + 576);
    assert_eq!(mailbox::area_len(16), 0);
}

#[test]
fn golden_input_chain() {
    let mut input = [0u8; 16 + 512 + 10];
    for (i, b) in input.iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut area = [0xaau8; 2048];
    let token = Token::new(0x42).unwrap();
    mailbox::write_input_chain(&mut area, AREA_IN, &input, token, Checksums::Off).unwrap();
    let b0 = &area[..BLOCK_SIZE];
    assert_eq!(&b0[bf::DATA], &input[16..528]);
    assert_eq!(&b0[0x200..0x230], &[0; 48]);
    assert_eq!(&b0[bf::NEXT], &(AREA_IN + 1024).to_be_bytes());
    assert_eq!(&b0[bf::BLOCK_NUM], &[0, 0, 0, 0]);
    assert_eq!(b0[bf::TOKEN], 0x42);
    assert_eq!((b0[bf::CTRL_SIG], b0[bf::SIG]), (0, 0), "unsigned");
    assert_eq!(&area[BLOCK_SIZE..1024], &[0xaa; 1024 - BLOCK_SIZE], "gap");
    let b1 = &area[1024..1024 + BLOCK_SIZE];
    assert_eq!(&b1[..10], &input[528..]);
    assert_eq!(&b1[10..512], &[0; 502]);
    assert_eq!(&b1[bf::NEXT], &[0; 8]);
    assert_eq!(&b1[bf::BLOCK_NUM], &[0, 0, 0, 1]);
}

#[test]
fn golden_block_signatures() {
    let mut area = [0u8; BLOCK_SIZE];
    let token = Token::new(1).unwrap();
    mailbox::prepare_output_chain(&mut area, AREA_OUT, 17, token, Checksums::On).unwrap();
    // Only the token is non-zero: ctrl_sig = !0x01, then sig = !(01 ^ fe).
    assert_eq!(area[bf::CTRL_SIG], 0xfe);
    assert_eq!(area[bf::SIG], 0x00);
    let mut input = [7u8; 100];
    let mut area = [0u8; BLOCK_SIZE];
    mailbox::write_input_chain(&mut area, AREA_IN, &input, token, Checksums::On).unwrap();
    assert_eq!(area[0x200..0x23f].iter().fold(0, |a, b| a ^ b), 0xff);
    assert_eq!(area.iter().fold(0, |a, b| a ^ b), 0xff);
    input[0] = 0;
    let _ = input;
}

#[test]
fn areas_are_checked_before_writing() {
    let mut small = [0x55u8; 1000];
    let token = Token::new(9).unwrap();
    assert_eq!(
        mailbox::write_input_chain(&mut small, AREA_IN, &[0; 600], token, Checksums::Off),
        Err(CmdqError::AreaTooSmall {
            required: 1024 + 576
        })
    );
    assert_eq!(small, [0x55; 1000]);
    assert_eq!(
        mailbox::prepare_output_chain(&mut small, 0x1100, 100, token, Checksums::Off),
        Err(CmdqError::BadAreaAddress)
    );
    assert_eq!(small, [0x55; 1000]);
    // A second block's address would wrap past the end of the bus.
    let mut area = [0x55u8; 2048];
    assert_eq!(
        mailbox::prepare_output_chain(&mut area, u64::MAX - 1023, 600, token, Checksums::Off),
        Err(CmdqError::BadAreaAddress)
    );
    assert_eq!(area, [0x55; 2048]);
}

/// Firmware's side of an output chain: data into each block, re-signed.
fn fill_output(area: &mut [u8], out: &[u8], checksums: Checksums) {
    for (i, chunk) in out[16..].chunks(512).enumerate() {
        let b = &mut area[i * 1024..i * 1024 + BLOCK_SIZE];
        b[..chunk.len()].copy_from_slice(chunk);
        if checksums == Checksums::On {
            mailbox::sign_block(b);
        }
    }
}

fn output_roundtrip(checksums: Checksums) {
    let len = 4112;
    let token = Token::new(0x77).unwrap();
    let mut area = vec![0u8; mailbox::area_len(len)];
    mailbox::prepare_output_chain(&mut area, AREA_OUT, len, token, checksums).unwrap();
    let want: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    fill_output(&mut area, &want, checksums);
    let mut got = vec![0u8; len];
    got[..16].copy_from_slice(&want[..16]);
    mailbox::read_output_chain(&area, AREA_OUT, &mut got, token, checksums).unwrap();
    assert_eq!(got, want);
}

#[test]
fn output_chains_round_trip() {
    output_roundtrip(Checksums::Off);
    output_roundtrip(Checksums::On);
}

/// A prepared 3-block output chain and its reader's verdict after `tamper`.
fn read_tampered(checksums: Checksums, tamper: impl FnOnce(&mut [u8])) -> Result<(), CmdqError> {
    let len = 16 + 3 * 512;
    let token = Token::new(0x10).unwrap();
    let mut area = vec![0u8; mailbox::area_len(len)];
    mailbox::prepare_output_chain(&mut area, AREA_OUT, len, token, checksums).unwrap();
    tamper(&mut area);
    let mut out = vec![0u8; len];
    mailbox::read_output_chain(&area, AREA_OUT, &mut out, token, checksums)
}

#[test]
fn output_chain_refusals() {
    assert_eq!(read_tampered(Checksums::Off, |_| {}), Ok(()));
    // Block 1's next zeroed: the chain ends after two of three blocks.
    assert_eq!(
        read_tampered(Checksums::Off, |a| a[1024 + 0x230..1024 + 0x238].fill(0)),
        Err(CmdqError::ShortChain {
            blocks: 2,
            needed: 3
        })
    );
    assert_eq!(
        read_tampered(Checksums::Off, |a| a[0x237] ^= 0x08),
        Err(CmdqError::BlockLink { block: 0 })
    );
    // The last block links on.
    assert_eq!(
        read_tampered(Checksums::Off, |a| a[2048 + 0x237] = 1),
        Err(CmdqError::BlockLink { block: 2 })
    );
    assert_eq!(
        read_tampered(Checksums::Off, |a| a[1024 + 0x23b] = 7),
        Err(CmdqError::BlockNumber { block: 1, found: 7 })
    );
    assert_eq!(
        read_tampered(Checksums::Off, |a| a[2048 + 0x23d] = 0x11),
        Err(CmdqError::BlockToken {
            block: 2,
            expected: 0x10,
            found: 0x11
        })
    );
    // A data byte flipped after signing: only checksums notice.
    assert_eq!(read_tampered(Checksums::Off, |a| a[1024 + 5] ^= 1), Ok(()));
    assert_eq!(
        read_tampered(Checksums::On, |a| a[1024 + 5] ^= 1),
        Err(CmdqError::BadBlockSignature { block: 1 })
    );
    // A flipped control byte breaks ctrl_sig even when sig is fixed up.
    assert_eq!(
        read_tampered(Checksums::On, |a| {
            a[0x210] ^= 1;
            a[0x23f] ^= 1;
        }),
        Err(CmdqError::BadBlockSignature { block: 0 })
    );
}

/// Posts an inline command on `q` and returns the posted slot and entry.
fn post(q: &mut CmdQueue, now: Instant) -> (Posted, [u8; ENTRY_SIZE]) {
    let d = Descriptor::new(16, None, 16, None).unwrap();
    let p = q
        .post(
            SlotClass::Command,
            0x800,
            d,
            now,
            Duration::from_millis(100),
        )
        .unwrap();
    let mut e = [0u8; ENTRY_SIZE];
    p.encode_entry(&mut e, &[0; 16]).unwrap();
    (p, e)
}

#[test]
fn a_command_completes() {
    let mut q = queue(Checksums::On);
    let (p, mut e) = post(&mut q, t(0));
    assert_eq!(p.doorbell(), 1 << p.slot());
    assert!(q.is_in_flight(p.slot()));
    assert_eq!(q.poll_timeout(), Some(t(100)));
    assert_eq!(
        q.handle_entry(p.slot(), &e, false, t(50)),
        Ok(Progress::Pending)
    );
    complete(&mut e, 0, &[0xab; 16]);
    assert_eq!(
        q.handle_entry(p.slot(), &e, true, t(60)),
        Ok(Progress::Done([0xab; 16]))
    );
    assert!(!q.is_in_flight(p.slot()));
    assert_eq!(q.poll_timeout(), None);
    // Nothing in flight: a second look is the platform's bug, a second
    // signal the device's.
    assert_eq!(
        q.handle_entry(p.slot(), &e, false, t(61)),
        Err(CmdqError::NotInFlight { slot: p.slot() })
    );
    assert_eq!(
        q.handle_entry(p.slot(), &e, true, t(61)),
        Err(CmdqError::UnexpectedCompletion { slot: p.slot() })
    );
}

#[test]
fn a_timeout_leaves_the_slot_stuck_until_firmware_returns_it() {
    let mut q = queue(Checksums::Off);
    let (p, mut e) = post(&mut q, t(0));
    assert_eq!(
        q.handle_entry(p.slot(), &e, false, t(100)),
        Err(CmdqError::Timeout {
            slot: p.slot(),
            opcode: 0x800
        })
    );
    assert_eq!(q.stuck(), 1 << p.slot());
    let (p2, _) = post(&mut q, t(101));
    assert_ne!(p2.slot(), p.slot(), "a stuck slot is not reused");
    assert!(!q.reclaim(p.slot(), &e), "still owned by hardware");
    complete(&mut e, 0, &[0; 16]);
    assert!(q.reclaim(p.slot(), &e));
    assert_eq!(q.stuck(), 0);
    // A command whose doorbell never rang is simply forgotten.
    let (p3, _) = post(&mut q, t(200));
    q.cancel(p3.slot());
    assert_eq!(q.in_flight(), 1 << p2.slot());
}

#[test]
fn signalled_but_owned_is_bad_ownership() {
    let mut q = queue(Checksums::Off);
    let (p, e) = post(&mut q, t(0));
    assert_eq!(
        q.handle_entry(p.slot(), &e, true, t(1)),
        Err(CmdqError::BadOwnership { slot: p.slot() })
    );
    assert_eq!(q.stuck(), 1 << p.slot());
}

#[test]
fn returned_entries_are_judged() {
    let check = |tamper: &dyn Fn(&mut [u8; ENTRY_SIZE]), checksums| {
        let mut q = queue(checksums);
        let (p, mut e) = post(&mut q, t(0));
        complete(&mut e, 0, &[0; 16]);
        tamper(&mut e);
        let r = q.handle_entry(p.slot(), &e, false, t(1));
        assert!(!q.is_in_flight(p.slot()), "a returned entry frees its slot");
        r
    };
    let status = |s: u8| move |e: &mut [u8; ENTRY_SIZE]| e[ef::STATUS_OWN] = s << 1;
    assert_eq!(
        check(&status(2), Checksums::Off),
        Err(CmdqError::Delivery(DeliveryStatus::TokenError))
    );
    assert_eq!(
        check(&status(0x10), Checksums::Off),
        Err(CmdqError::Delivery(DeliveryStatus::BadCommandType))
    );
    assert_eq!(
        check(&status(0x5c), Checksums::Off),
        Err(CmdqError::UnknownDeliveryStatus(0x5c))
    );
    assert_eq!(
        check(&|e| e[ef::TOKEN] ^= 0x80, Checksums::Off),
        Err(CmdqError::WrongToken {
            expected: 1,
            found: 0x81
        })
    );
    assert_eq!(
        check(&|e| e[ef::TYPE] = 0, Checksums::Off),
        Err(CmdqError::DescriptorChanged { field: "type" })
    );
    assert_eq!(
        check(&|e| e[0x3b] = 0x20, Checksums::Off),
        Err(CmdqError::DescriptorChanged { field: "outlen" })
    );
    assert_eq!(
        check(&|e| e[0x37] = 0x04, Checksums::Off),
        Err(CmdqError::DescriptorChanged { field: "out_ptr" })
    );
    assert_eq!(check(&|e| e[0x20] ^= 1, Checksums::Off).map(|_| ()), Ok(()));
    assert_eq!(
        check(&|e| e[0x20] ^= 1, Checksums::On),
        Err(CmdqError::BadEntrySignature)
    );
}

#[test]
fn slots_and_tokens() {
    let mut q = CmdQueue::new(Geometry::new(2, 6).unwrap(), Checksums::Off);
    let d = Descriptor::new(16, None, 16, None).unwrap();
    let mut tokens = std::vec::Vec::new();
    let mut slots = std::vec::Vec::new();
    assert_eq!(q.next_free(SlotClass::Pages), Some(3));
    for _ in 0..3 {
        let next = q.next_free(SlotClass::Command);
        let p = q
            .post(SlotClass::Command, 1, d, t(0), Duration::ZERO)
            .unwrap();
        tokens.push(p.token().raw());
        slots.push(p.slot());
        assert_eq!(next, Some(p.slot()));
    }
    assert_eq!(q.next_free(SlotClass::Command), None);
    assert_eq!(slots, [0, 1, 2], "the last slot is the page queue's");
    assert_eq!(
        q.post(SlotClass::Command, 1, d, t(0), Duration::ZERO),
        Err(CmdqError::NoFreeSlot)
    );
    let p = q
        .post(SlotClass::Pages, 0x108, d, t(0), Duration::ZERO)
        .unwrap();
    assert_eq!(p.slot(), 3);
    assert_eq!(q.in_flight(), 0b1111);
    tokens.push(p.token().raw());
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 4, "tokens in flight are distinct");
    assert!(!tokens.contains(&0));
    q.reset();
    assert_eq!(q.in_flight(), 0);
    // Tokens wrap past 255 without ever being 0.
    let mut q = CmdQueue::new(Geometry::new(0, 6).unwrap(), Checksums::Off);
    for _ in 0..600 {
        let p = q
            .post(SlotClass::Command, 1, d, t(0), Duration::ZERO)
            .unwrap();
        assert_ne!(p.token().raw(), 0);
        assert_eq!(p.slot(), 0);
        q.abandon(0);
        q.reset();
    }
}

#[test]
fn init_segment_values() {
    assert_eq!(iseg::check_cmdif_revision(0x0005_0012), Ok(()));
    assert_eq!(
        iseg::check_cmdif_revision(0x0004_0000),
        Err(CmdqError::BadCmdifRevision(4))
    );
    assert_eq!(
        iseg::check_cmdif_revision(u32::MAX),
        Err(CmdqError::DeviceGone)
    );
    let v = iseg::FwVersion::from_registers(0x0028_0016, 0x0005_03e8);
    assert_eq!(std::format!("{v}"), "22.40.1000");
    assert_eq!(iseg::is_initializing(0x8000_0000), Ok(true));
    assert_eq!(iseg::is_initializing(0x4000_0000), Ok(false));
    let g = Geometry::from_register(0x0000_0156).unwrap();
    assert_eq!((g.slots(), g.log_stride()), (32, 6));
    assert_eq!(g.entry_offset(31), Some(31 * 64));
    assert_eq!(g.entry_offset(32), None);
    assert_eq!(
        NicInterface::from_register(0x0000_0156),
        NicInterface::Disabled
    );
    for (size, stride) in [(6, 6), (5, 8), (0, 5)] {
        assert_eq!(
            Geometry::new(size, stride),
            Err(CmdqError::BadGeometry {
                log_size: size,
                log_stride: stride
            })
        );
    }
    assert_eq!(
        iseg::queue_address_words(0x12_3456_7000),
        Ok((0x12, 0x3456_7000))
    );
    assert_eq!(
        iseg::queue_address_words(0x1_0000_0800),
        Err(CmdqError::UnalignedQueue)
    );
}

#[test]
fn health() {
    let mut m = HealthMonitor::new(Duration::from_secs(3));
    let ok = |counter| HealthSample {
        counter,
        syndrome_word: 0,
        fw_ver: 0x1234,
    };
    assert_eq!(m.handle_sample(ok(1), t(0)), Ok(()));
    assert_eq!(m.handle_sample(ok(1), t(3000)), Ok(()));
    assert_eq!(
        m.handle_sample(ok(0x0100_0001), t(3001)),
        Err(CmdqError::HealthCounterStuck)
    );
    assert_eq!(m.handle_sample(ok(2), t(3002)), Ok(()));
    assert_eq!(
        m.handle_sample(
            HealthSample {
                syndrome_word: 0x0007_0102,
                ..ok(3)
            },
            t(3003)
        ),
        Err(CmdqError::HealthSyndrome {
            syndrome: 7,
            ext_syndrome: 0x102
        })
    );
    assert_eq!(
        m.handle_sample(
            HealthSample {
                counter: u32::MAX,
                syndrome_word: u32::MAX,
                fw_ver: u32::MAX
            },
            t(1)
        ),
        Err(CmdqError::DeviceGone)
    );
}

#[test]
fn errnos_follow_linux() {
    use crate::errno::Errno;
    assert_eq!(
        CmdqError::Delivery(DeliveryStatus::SignatureError).errno(),
        Errno::EBADR
    );
    assert_eq!(
        CmdqError::Delivery(DeliveryStatus::BadBlockNumber).errno(),
        Errno::EFAULT
    );
    assert_eq!(
        CmdqError::Delivery(DeliveryStatus::InputLengthError).errno(),
        Errno::ENOMSG
    );
    assert_eq!(
        CmdqError::Delivery(DeliveryStatus::FirmwareError).errno(),
        Errno::EIO
    );
    // A code the table does not name: its `default:`, EINVAL.
    assert_eq!(
        CmdqError::UnknownDeliveryStatus(0x5c).errno(),
        Errno::EINVAL
    );
    assert_eq!(DeliveryStatus::Unknown(0x5c).errno(), Some(Errno::EINVAL));
    assert_eq!(
        CmdqError::Delivery(DeliveryStatus::Unknown(0x5c)).errno(),
        Errno::EINVAL
    );
    assert_eq!(
        CmdqError::Timeout { slot: 0, opcode: 0 }.errno(),
        Errno::ETIMEDOUT
    );
    assert!(CmdqError::HealthCounterStuck.is_fatal());
    assert!(
        !CmdqError::ShortChain {
            blocks: 1,
            needed: 2
        }
        .is_fatal()
    );
}
