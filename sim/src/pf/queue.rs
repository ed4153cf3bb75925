//! The device side of the command queue: reading an entry and its input
//! chain from host memory, judging them as firmware does, running the
//! command and writing the output back. The formats are read here from
//! `reference/mlx5-ifc.md` §4.2–4.4 directly (this is the sim's own
//! decoder, independent of `mlx5vf-core::cmdq`).

use crate::iommu::Dma;
use crate::wire::{be32, be64, put_be64};

use super::{ENTRY_SIZE, Pf, QueueFault};

/// Entry offsets.
const TYPE: usize = 0x00;
const INLEN: usize = 0x04;
const IN_PTR: usize = 0x08;
const IN: usize = 0x10;
const OUT: usize = 0x20;
const OUT_PTR: usize = 0x30;
const OUTLEN: usize = 0x38;
const TOKEN: usize = 0x3c;
const SIG: usize = 0x3d;
const STATUS_OWN: usize = 0x3f;

/// Block layout.
const BLOCK: usize = 576;
const DATA: usize = 512;
const NEXT: usize = 0x230;
const BLOCK_NUM: usize = 0x238;
const BLOCK_TOKEN: usize = 0x23d;
const CTRL_SIG: usize = 0x23e;
const BLOCK_SIG: usize = 0x23f;
/// Blocks are aligned to the block size rounded to a power of two.
const BLOCK_ALIGN: u64 = 1024;

/// Delivery statuses (`status_own` bits 7:1).
mod delivery {
    pub(super) const SIGNATURE: u8 = 0x1;
    pub(super) const TOKEN: u8 = 0x2;
    pub(super) const BLOCK_NUMBER: u8 = 0x3;
    pub(super) const OUT_ALIGN: u8 = 0x4;
    pub(super) const IN_ALIGN: u8 = 0x5;
    pub(super) const FW_ERR: u8 = 0x6;
    pub(super) const IN_LENGTH: u8 = 0x7;
    pub(super) const OUT_LENGTH: u8 = 0x8;
    pub(super) const BAD_TYPE: u8 = 0x10;
}

/// What a pending slot holds, before it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peek {
    /// The command's opcode (from the entry's inline input).
    pub opcode: u16,
    /// `inlen`.
    pub inlen: usize,
    /// `outlen`.
    pub outlen: usize,
}

/// A command [`Pf::execute`] ran: its completed entry, which
/// [`Pf::hand_back`] writes to host memory (the owner of the model may
/// take its time in between, as firmware does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Executed {
    slot: u8,
    at: u64,
    entry: [u8; ENTRY_SIZE],
}

impl Executed {
    /// The slot.
    #[must_use]
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// The output's status byte (0: OK), valid once delivered.
    #[must_use]
    pub fn status(&self) -> u8 {
        byte(&self.entry, OUT)
    }

    /// The first 16 output bytes.
    #[must_use]
    pub fn output_head(&self) -> &[u8] {
        self.entry.get(OUT..OUT + 16).unwrap_or(&[])
    }
}

fn xor8(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |a, b| a ^ b)
}

/// Whether a signed range checks (XORs to `0xff`).
fn signed(bytes: &[u8]) -> bool {
    xor8(bytes) == 0xff
}

fn byte(buf: &[u8], at: usize) -> u8 {
    buf.get(at).copied().unwrap_or(0)
}

fn set(buf: &mut [u8], at: usize, value: u8) {
    if let Some(b) = buf.get_mut(at) {
        *b = value;
    }
}

/// Blocks a command of `len` bytes carries beyond the inline 16.
fn blocks(len: usize) -> usize {
    len.saturating_sub(16).div_ceil(DATA)
}

impl Pf {
    /// The bus address of slot `slot`'s entry.
    fn entry_address(&self, slot: u8) -> Option<u64> {
        let slots = 1u8 << self.cfg.log_cmdq_size.min(5);
        if slot >= slots {
            return None;
        }
        let off = u64::from(slot) << self.cfg.log_cmdq_stride.min(12);
        self.queue_address()?.checked_add(off)
    }

    fn read_entry(&mut self, slot: u8, dma: &mut dyn Dma) -> Option<(u64, [u8; ENTRY_SIZE])> {
        let at = self.entry_address(slot)?;
        let mut e = [0u8; ENTRY_SIZE];
        self.dma_read(dma, at, &mut e).then_some((at, e))
    }

    /// What slot `slot` holds, if its entry is owned by hardware.
    pub fn peek(&mut self, slot: u8, dma: &mut dyn Dma) -> Option<Peek> {
        let (_, e) = self.read_entry(slot, dma)?;
        if byte(&e, STATUS_OWN) & 1 == 0 {
            return None;
        }
        // CAST: a 16-bit field (the top half of the first input dword).
        Some(Peek {
            opcode: (be32(&e, IN) >> 16) as u16,
            inlen: be32(&e, INLEN) as usize,
            outlen: be32(&e, OUTLEN) as usize,
        })
    }

    /// Runs the command in slot `slot`: `input` and `output` are scratch
    /// space of at least the entry's `inlen` and `outlen` (a shorter one is
    /// answered with an input or output length delivery error, the model's
    /// limit). `None` when firmware will not hand the entry back: stuck, in
    /// error (health syndrome), or the entry was unreachable or not owned
    /// by hardware.
    pub fn execute(
        &mut self,
        slot: u8,
        dma: &mut dyn Dma,
        input: &mut [u8],
        output: &mut [u8],
    ) -> Option<Executed> {
        let silent = None;
        let Some((at, mut e)) = self.read_entry(slot, dma) else {
            return silent;
        };
        if byte(&e, STATUS_OWN) & 1 == 0 {
            self.counters.spurious_doorbells = self.counters.spurious_doorbells.saturating_add(1);
            return silent;
        }
        if self.health_syndrome != 0 {
            // A firmware in error executes nothing.
            return silent;
        }
        self.counters.commands = self.counters.commands.saturating_add(1);
        // CAST: a 16-bit field.
        let opcode = (be32(&e, IN) >> 16) as u16;
        let fault = self.take_fault(opcode);
        if fault == Some(QueueFault::Stuck) {
            return silent;
        }
        let checksums = self.hca.checksums;
        let delivered = match fault {
            // Refused at delivery: nothing runs.
            Some(QueueFault::Delivery(code)) => Err(code),
            _ => self.gather(&e, dma, input, output, checksums),
        };
        let status = match delivered {
            Ok((inlen, outlen)) => {
                let (input, output) = (
                    input.get(..inlen).unwrap_or(&[]),
                    output.get_mut(..outlen).unwrap_or(&mut []),
                );
                self.dispatch(input, output, dma);
                if !self.scatter(&e, dma, output, checksums, fault) {
                    return silent;
                }
                if let Some(head) = e.get_mut(OUT..OUT + 16) {
                    for (d, s) in head.iter_mut().zip(output.iter()) {
                        *d = *s;
                    }
                }
                0
            }
            Err(code) => {
                self.counters.delivery_errors = self.counters.delivery_errors.saturating_add(1);
                code
            }
        };
        if fault == Some(QueueFault::WrongToken) {
            let token = byte(&e, TOKEN) ^ 0x80;
            set(&mut e, TOKEN, token);
        }
        let owner = u8::from(fault == Some(QueueFault::BadOwnership));
        set(&mut e, STATUS_OWN, status << 1 | owner);
        set(&mut e, SIG, 0);
        let sig = !xor8(&e);
        set(&mut e, SIG, sig);
        Some(Executed { slot, at, entry: e })
    }

    /// Writes a completed entry back to host memory; returns whether the
    /// device could (a completion is signalled then).
    pub fn hand_back(&mut self, done: &Executed, dma: &mut dyn Dma) -> bool {
        self.dma_write(dma, done.at, &done.entry)
    }

    /// Checks the entry and both chains and copies the input into `input`.
    /// Returns `(inlen, outlen)` or a delivery status.
    fn gather(
        &mut self,
        e: &[u8; ENTRY_SIZE],
        dma: &mut dyn Dma,
        input: &mut [u8],
        output: &mut [u8],
        checksums: bool,
    ) -> Result<(usize, usize), u8> {
        if byte(e, TYPE) != 7 {
            return Err(delivery::BAD_TYPE);
        }
        if checksums && !signed(e) {
            return Err(delivery::SIGNATURE);
        }
        // CAST: u32 -> usize is lossless on every target we build.
        let inlen = be32(e, INLEN) as usize;
        let outlen = be32(e, OUTLEN) as usize;
        if inlen < 16 || inlen > input.len() {
            return Err(delivery::IN_LENGTH);
        }
        if outlen < 16 || outlen > output.len() {
            return Err(delivery::OUT_LENGTH);
        }
        let token = byte(e, TOKEN);
        let head = e.get(IN..IN + 16).unwrap_or(&[]);
        for (d, s) in input.iter_mut().zip(head) {
            *d = *s;
        }
        let mut ptr = be64(e, IN_PTR);
        let mut block = [0u8; BLOCK];
        let rest = input.get_mut(16..inlen).unwrap_or(&mut []);
        for (i, chunk) in rest.chunks_mut(DATA).enumerate() {
            self.read_block(dma, ptr, &mut block, i, token, checksums, Side::In)?;
            for (d, s) in chunk.iter_mut().zip(&block) {
                *d = *s;
            }
            ptr = be64(&block, NEXT);
        }
        let mut ptr = be64(e, OUT_PTR);
        for i in 0..blocks(outlen) {
            self.read_block(dma, ptr, &mut block, i, token, checksums, Side::Out)?;
            ptr = be64(&block, NEXT);
        }
        Ok((inlen, outlen))
    }

    /// Reads and checks block `index` of a chain at `ptr`.
    #[allow(clippy::too_many_arguments)]
    fn read_block(
        &mut self,
        dma: &mut dyn Dma,
        ptr: u64,
        block: &mut [u8; BLOCK],
        index: usize,
        token: u8,
        checksums: bool,
        side: Side,
    ) -> Result<(), u8> {
        let (short, align) = match side {
            Side::In => (delivery::IN_LENGTH, delivery::IN_ALIGN),
            Side::Out => (delivery::OUT_LENGTH, delivery::OUT_ALIGN),
        };
        if ptr == 0 {
            return Err(short);
        }
        if ptr % BLOCK_ALIGN != 0 {
            return Err(align);
        }
        if !self.dma_read(dma, ptr, block) {
            return Err(delivery::FW_ERR);
        }
        // CAST: a chain has at most u32::MAX / 512 blocks.
        if be32(block, BLOCK_NUM) != index as u32 {
            return Err(delivery::BLOCK_NUMBER);
        }
        if byte(block, BLOCK_TOKEN) != token {
            return Err(delivery::TOKEN);
        }
        if checksums
            && side == Side::In
            && !(signed(block.get(0x200..0x23f).unwrap_or(&[])) && signed(block))
        {
            return Err(delivery::SIGNATURE);
        }
        Ok(())
    }

    /// Writes `output[16..]` into the output chain (re-signing blocks when
    /// checksums are on). `false` when a block could not be reached.
    fn scatter(
        &mut self,
        e: &[u8; ENTRY_SIZE],
        dma: &mut dyn Dma,
        output: &[u8],
        checksums: bool,
        fault: Option<QueueFault>,
    ) -> bool {
        let mut ptr = be64(e, OUT_PTR);
        let mut block = [0u8; BLOCK];
        let rest = output.get(16..).unwrap_or(&[]);
        for (i, chunk) in rest.chunks(DATA).enumerate() {
            if !self.dma_read(dma, ptr, &mut block) {
                return false;
            }
            let at = ptr;
            ptr = be64(&block, NEXT);
            if let Some(data) = block.get_mut(..DATA) {
                data.fill(0);
                for (d, s) in data.iter_mut().zip(chunk) {
                    *d = *s;
                }
            }
            if i == 0 && fault == Some(QueueFault::ShortOutputChain) {
                put_be64(&mut block, NEXT, 0);
            }
            if checksums {
                set(&mut block, CTRL_SIG, 0);
                set(&mut block, BLOCK_SIG, 0);
                let ctrl = !xor8(block.get(0x200..0x23f).unwrap_or(&[]));
                set(&mut block, CTRL_SIG, ctrl);
                let all = !xor8(&block);
                set(&mut block, BLOCK_SIG, all);
            }
            if !self.dma_write(dma, at, &block) {
                return false;
            }
        }
        true
    }
}

/// Which chain a block belongs to (they fail with different statuses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    In,
    Out,
}
