//! The command queue of an mlx5 PF, driven from outside the kernel: the
//! 64-byte command-queue entry, the 576-byte mailbox blocks that carry
//! inputs and outputs beyond 16 bytes, slot allocation with tokens, and the
//! completion state machine with deadlines the caller supplies.
//!
//! Like the rest of the core this is pure: nothing here touches a register,
//! reads a clock or sleeps. A platform that owns a PF's BAR0 and DMA memory
//! (`mlx5vf`'s `vfio-pf:` backend, or its in-process register model) does
//! the I/O; this module says what bytes go where and judges what comes back.
//!
//! - [`iseg`]: the initialization segment at BAR0 offset 0 (firmware and
//!   command-interface revisions, queue geometry, doorbell, `initializing`,
//!   the health buffer and counter).
//! - [`entry`]: encoding an entry and decoding a completed one.
//! - [`mailbox`]: mailbox chains in a caller-owned, IOVA-contiguous area.
//! - [`queue`]: which slot a command takes, its token, its deadline, and
//!   what a completion means.
//! - [`health`]: deciding from the health counter and syndrome whether the
//!   firmware is alive.
//!
//! # Untrusted device memory
//! Entries and mailbox blocks are DMA memory the device writes. Everything
//! read back is checked before it is believed: the owner bit, the delivery
//! status (unknown codes are an error of their own), the token, the
//! descriptor the driver posted, the chain's block numbers, tokens and
//! links, and signatures when checksums are on. Each failure is a specific
//! [`CmdqError`]; none panics.
//!
//! # The protocol, in short (`reference/mlx5-ifc.md` §4.4)
//! 1. [`CmdQueue::post`] picks a slot and a token
//!    and starts the deadline.
//! 2. The platform writes the input chain
//!    ([`mailbox::write_input_chain`]), pre-zeroes the output chain
//!    ([`mailbox::prepare_output_chain`]), writes the entry
//!    ([`Posted::encode_entry`](queue::Posted::encode_entry), owner = hardware) and rings the
//!    doorbell with [`Posted::doorbell`].
//! 3. It reads the entry back until
//!    [`CmdQueue::handle_entry`] says
//!    [`Progress::Done`] (or an error, a timeout
//!    included).
//! 4. It gathers the output: 16 bytes from the entry, the rest through
//!    [`mailbox::read_output_chain`].

pub mod entry;
pub mod health;
pub mod iseg;
pub mod mailbox;
pub mod queue;

mod error;
mod sig;

pub use error::{CmdqError, DeliveryStatus};
pub use queue::{CmdQueue, Instant, Posted, Progress, SlotClass};

/// Bytes of one command-queue entry (`mlx5_cmd_layout`).
pub const ENTRY_SIZE: usize = 64;
/// Bytes of input and of output carried inline in the entry.
pub const INLINE_LEN: usize = 16;
/// Bytes of one mailbox block (`mlx5_cmd_prot_block`).
pub const BLOCK_SIZE: usize = 576;
/// Data bytes a mailbox block carries (`MLX5_CMD_DATA_BLOCK_SIZE`).
pub const BLOCK_DATA: usize = 512;
/// Distance between consecutive blocks of a chain in the caller's area:
/// 576 rounded up to a power of two, as the kernel's DMA pool aligns them,
/// so no block straddles a 4 KiB page and every block pointer is aligned to
/// the block size (delivery statuses 4 and 5 refuse unaligned ones).
pub const BLOCK_STRIDE: usize = 1024;
/// Most slots a queue has: `2^log_cmdq_size <= 32` (`mlx5_cmd_enable`).
pub const MAX_SLOTS: usize = 32;
/// The command-interface revision this code speaks.
pub const CMDIF_REV: u16 = 5;
/// Entry `type`: `MLX5_PCI_CMD_XPORT`.
pub const CMD_TYPE_PCI: u8 = 7;

/// Whether signatures are written and checked.
///
/// Both Linux and rdma-core disable firmware checksums
/// (`cmd_hca_cap.cmdif_checksum = 0`) and Linux still fills the entry
/// signature; [`Checksums::Off`] does that. [`Checksums::On`] also signs
/// every mailbox block and verifies the signatures of what comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Checksums {
    /// Sign the entry only; verify nothing.
    Off,
    /// Sign entries and blocks; verify completed entries and output blocks.
    On,
}

/// A command's token: non-zero, copied into the entry and every block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Token(u8);

impl Token {
    /// The token as it sits in the entry and in each block.
    pub const fn raw(self) -> u8 {
        self.0
    }

    /// A token from its byte, for tests and tools; `None` for 0 (0 means
    /// "no token" to rdma-core, so the queue never hands it out).
    pub const fn new(raw: u8) -> Option<Self> {
        if raw == 0 { None } else { Some(Self(raw)) }
    }
}

#[cfg(test)]
mod tests;
