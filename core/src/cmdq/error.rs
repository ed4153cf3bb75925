//! What can go wrong between posting a command and reading its output.

use core::fmt;

use crate::errno::Errno;
use crate::macros::enum_with_unknown;

enum_with_unknown! {
    /// The delivery status firmware writes into bits 7:1 of an entry's
    /// `status_own` (`MLX5_CMD_DELIVERY_STAT_*`): non-zero means the
    /// command was not executed.
    pub enum DeliveryStatus(u8) {
        /// Delivered; the output's status byte says how it went.
        Ok = 0x0 => "OK",
        /// A signature did not check.
        SignatureError = 0x1 => "SIGNAT_ERR",
        /// A block's token differs from the entry's.
        TokenError = 0x2 => "TOK_ERR",
        /// A block's `block_num` is out of sequence.
        BadBlockNumber = 0x3 => "BAD_BLK_NUM_ERR",
        /// The output mailbox pointer is not aligned to the block size.
        OutputPointerNotAligned = 0x4 => "OUT_PTR_ALIGN_ERR",
        /// The input mailbox pointer is not aligned to the block size.
        InputPointerNotAligned = 0x5 => "IN_PTR_ALIGN_ERR",
        /// Firmware failed internally.
        FirmwareError = 0x6 => "FW_ERR",
        /// `inlen` does not match the chain or the command.
        InputLengthError = 0x7 => "IN_LENGTH_ERR",
        /// `outlen` does not match the chain or the command.
        OutputLengthError = 0x8 => "OUT_LENGTH_ERR",
        /// Reserved fields of the entry or a block are not zero.
        ReservedNotCleared = 0x9 => "RES_FLD_NOT_CLR_ERR",
        /// The entry's `type` is not `MLX5_PCI_CMD_XPORT`.
        BadCommandType = 0x10 => "CMD_DESCR_ERR",
    }
}

impl DeliveryStatus {
    /// The errno Linux reports for it (`cmd.c`'s `deliv_status_to_err`);
    /// `None` for OK. A code the table does not name is `EINVAL`, its
    /// `default:` (decoding reports such a code as
    /// [`CmdqError::UnknownDeliveryStatus`], with the same errno).
    pub const fn errno(self) -> Option<Errno> {
        Some(match self {
            Self::Ok => return None,
            Self::SignatureError | Self::TokenError => Errno::EBADR,
            Self::BadBlockNumber | Self::OutputPointerNotAligned | Self::InputPointerNotAligned => {
                Errno::EFAULT
            }
            Self::FirmwareError => Errno::EIO,
            Self::Unknown(_) => Errno::EINVAL,
            Self::InputLengthError
            | Self::OutputLengthError
            | Self::ReservedNotCleared
            | Self::BadCommandType => Errno::ENOMSG,
        })
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.linux_name() {
            Some(name) => write!(f, "{name}({:#x})", self.raw()),
            None => write!(f, "delivery status {:#x}", self.raw()),
        }
    }
}

/// A command-queue failure: the command's output, if any, is not to be
/// believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum CmdqError {
    /// Firmware handed the entry back with a known, non-OK delivery status:
    /// the command was not executed.
    Delivery(DeliveryStatus),
    /// Firmware handed the entry back with a delivery status no table
    /// knows: garbage in `status_own`.
    UnknownDeliveryStatus(u8),
    /// The completed entry's token is not the one posted.
    WrongToken {
        /// The token posted.
        expected: u8,
        /// The token found.
        found: u8,
    },
    /// A completion was signalled for the slot but its entry is still owned
    /// by hardware.
    BadOwnership {
        /// The slot.
        slot: u8,
    },
    /// A completion arrived for a slot with no command in flight.
    UnexpectedCompletion {
        /// The slot.
        slot: u8,
    },
    /// The completed entry's descriptor (type, lengths or mailbox
    /// pointers) is not the one posted: firmware wrote over it.
    DescriptorChanged {
        /// The field that changed.
        field: &'static str,
    },
    /// The completed entry's signature does not check (checksums on).
    BadEntrySignature,
    /// An output block's signature does not check (checksums on).
    BadBlockSignature {
        /// Index of the block in the chain.
        block: u32,
    },
    /// The output chain as read back ends before the output does.
    ShortChain {
        /// Blocks the chain has.
        blocks: u32,
        /// Blocks the output needs.
        needed: u32,
    },
    /// An output block's `block_num` is not its position.
    BlockNumber {
        /// Position in the chain.
        block: u32,
        /// The number it carries.
        found: u32,
    },
    /// An output block's token is not the command's.
    BlockToken {
        /// Position in the chain.
        block: u32,
        /// The command's token.
        expected: u8,
        /// The token found.
        found: u8,
    },
    /// An output block's `next` no longer points where the driver linked
    /// it.
    BlockLink {
        /// Position in the chain.
        block: u32,
    },
    /// Firmware did not hand the entry back before the deadline.
    Timeout {
        /// The slot, which stays unusable until firmware returns it.
        slot: u8,
        /// The command's opcode.
        opcode: u16,
    },
    /// Every slot of the class is busy (or stuck after a timeout).
    NoFreeSlot,
    /// The caller's mailbox area is too small for the chain.
    AreaTooSmall {
        /// Bytes the chain needs.
        required: usize,
    },
    /// A mailbox area's bus address is not aligned to [`BLOCK_STRIDE`](super::BLOCK_STRIDE),
    /// or a block address would overflow.
    BadAreaAddress,
    /// A command length below 16 bytes or above what the 32-bit length
    /// fields carry.
    BadLength {
        /// The length.
        len: usize,
    },
    /// The slot has no command in flight (a platform bug).
    NotInFlight {
        /// The slot.
        slot: u8,
    },
    /// The queue geometry in `cmdq_addr_l_sz` is outside the limits
    /// (`2^log_size <= 32`, `64 <= 2^log_stride`, queue within 4 KiB).
    BadGeometry {
        /// `log_cmdq_size`.
        log_size: u8,
        /// `log_cmdq_stride`.
        log_stride: u8,
    },
    /// The command-interface revision is not [`CMDIF_REV`](super::CMDIF_REV).
    BadCmdifRevision(u16),
    /// The queue's bus address is not 4 KiB aligned.
    UnalignedQueue,
    /// The firmware stayed `initializing` past the deadline.
    StillInitializing,
    /// The health buffer reports a syndrome: the firmware is in error.
    HealthSyndrome {
        /// `synd`.
        syndrome: u8,
        /// `ext_synd`.
        ext_syndrome: u16,
    },
    /// The health counter stopped: the firmware is hung.
    HealthCounterStuck,
    /// The device reads as all ones, or its registers cannot be read at
    /// all: it is gone from the bus.
    DeviceGone,
}

impl CmdqError {
    /// The errno the driver reports for it.
    pub const fn errno(&self) -> Errno {
        match self {
            Self::Delivery(status) => match status.errno() {
                Some(e) => e,
                None => Errno::EIO,
            },
            Self::WrongToken { .. }
            | Self::BadEntrySignature
            | Self::BadBlockSignature { .. }
            | Self::BlockToken { .. } => Errno::EBADR,
            Self::Timeout { .. } | Self::StillInitializing => Errno::ETIMEDOUT,
            Self::NoFreeSlot => Errno::EBUSY,
            Self::AreaTooSmall { .. } => Errno::ENOMEM,
            // Linux's delivery-status table ends in `default: return -EINVAL`.
            Self::BadLength { .. } | Self::UnknownDeliveryStatus(_) => Errno::EINVAL,
            Self::DeviceGone => Errno::ENOTCONN,
            Self::BadOwnership { .. }
            | Self::UnexpectedCompletion { .. }
            | Self::DescriptorChanged { .. }
            | Self::ShortChain { .. }
            | Self::BlockNumber { .. }
            | Self::BlockLink { .. }
            | Self::BadAreaAddress
            | Self::NotInFlight { .. }
            | Self::BadGeometry { .. }
            | Self::BadCmdifRevision(_)
            | Self::UnalignedQueue
            | Self::HealthSyndrome { .. }
            | Self::HealthCounterStuck => Errno::EIO,
        }
    }

    /// Whether the firmware is unusable from now on (health or bus), as
    /// opposed to one command failing.
    pub const fn is_fatal(&self) -> bool {
        matches!(
            self,
            Self::HealthSyndrome { .. } | Self::HealthCounterStuck | Self::DeviceGone
        )
    }
}

impl fmt::Display for CmdqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Delivery(s) => write!(f, "command not delivered: {s}"),
            Self::UnknownDeliveryStatus(code) => {
                write!(f, "firmware returned an unknown delivery status {code:#x}")
            }
            Self::WrongToken { expected, found } => write!(
                f,
                "completed entry carries token {found:#04x}, posted {expected:#04x}"
            ),
            Self::BadOwnership { slot } => write!(
                f,
                "completion signalled for slot {slot} but its entry is still owned by hardware"
            ),
            Self::UnexpectedCompletion { slot } => {
                write!(
                    f,
                    "completion for slot {slot}, which has no command in flight"
                )
            }
            Self::DescriptorChanged { field } => {
                write!(f, "firmware changed the completed entry's {field}")
            }
            Self::BadEntrySignature => f.write_str("completed entry fails its signature"),
            Self::BadBlockSignature { block } => {
                write!(f, "output mailbox block {block} fails its signature")
            }
            Self::ShortChain { blocks, needed } => write!(
                f,
                "output mailbox chain ends after {blocks} blocks, the output needs {needed}"
            ),
            Self::BlockNumber { block, found } => {
                write!(f, "output mailbox block {block} carries block_num {found}")
            }
            Self::BlockToken {
                block,
                expected,
                found,
            } => write!(
                f,
                "output mailbox block {block} carries token {found:#04x}, expected {expected:#04x}"
            ),
            Self::BlockLink { block } => {
                write!(f, "output mailbox block {block} links somewhere else")
            }
            Self::Timeout { slot, opcode } => write!(
                f,
                "firmware did not complete opcode {opcode:#x} in slot {slot} before the deadline"
            ),
            Self::NoFreeSlot => f.write_str("no free command slot"),
            Self::AreaTooSmall { required } => {
                write!(f, "mailbox area too small: {required} bytes required")
            }
            Self::BadAreaAddress => f.write_str("mailbox area address not block aligned"),
            Self::BadLength { len } => write!(f, "command length {len} out of range"),
            Self::NotInFlight { slot } => write!(f, "slot {slot} has no command in flight"),
            Self::BadGeometry {
                log_size,
                log_stride,
            } => write!(
                f,
                "command queue geometry out of range: log_size {log_size}, log_stride {log_stride}"
            ),
            Self::BadCmdifRevision(rev) => write!(
                f,
                "command interface revision {rev}, expected {}",
                super::CMDIF_REV
            ),
            Self::UnalignedQueue => f.write_str("command queue address not 4 KiB aligned"),
            Self::StillInitializing => f.write_str("firmware still initializing at the deadline"),
            Self::HealthSyndrome {
                syndrome,
                ext_syndrome,
            } => write!(
                f,
                "firmware health syndrome {syndrome:#04x} (ext {ext_syndrome:#06x})"
            ),
            Self::HealthCounterStuck => f.write_str("firmware health counter stopped"),
            Self::DeviceGone => f.write_str(
                "device gone from the bus (its registers read as all ones or cannot be read)",
            ),
        }
    }
}

impl core::error::Error for CmdqError {}
