//! The initialization segment at BAR0 offset 0 (`mlx5_init_seg`,
//! `reference/mlx5-ifc.md` §4.1): register offsets and what their values
//! mean. Registers are big-endian 32-bit words; the values here are the
//! words as numbers (what `ioread32be` returns).

use super::error::CmdqError;
use super::{CMDIF_REV, ENTRY_SIZE, MAX_SLOTS};

/// `fw_rev`: minor (31:16), major (15:0).
pub const FW_REV: u32 = 0x000;
/// `cmdif_rev_fw_sub`: command-interface revision (31:16), firmware
/// subminor (15:0).
pub const CMDIF_REV_FW_SUB: u32 = 0x004;
/// `cmdq_addr_h`: high 32 bits of the queue's bus address.
pub const CMDQ_ADDR_H: u32 = 0x010;
/// `cmdq_addr_l_sz`: write the low 32 bits of the address; read
/// `nic_interface` (10:8), `log_cmdq_size` (7:4), `log_cmdq_stride` (3:0).
pub const CMDQ_ADDR_L_SZ: u32 = 0x014;
/// `cmd_dbell`: write `1 << slot` to start a command.
pub const CMD_DBELL: u32 = 0x018;
/// `initializing`: bit 31 set while firmware initializes.
pub const INITIALIZING: u32 = 0x1fc;
/// The health buffer (64 bytes).
pub const HEALTH: u32 = 0x200;
/// `health.fw_ver` (all ones: the device is gone from the bus).
pub const HEALTH_FW_VER: u32 = HEALTH + 0x30;
/// The health word holding `irisc_index` (31:24), `synd` (23:16) and
/// `ext_synd` (15:0).
pub const HEALTH_SYND: u32 = HEALTH + 0x3c;
/// `cmd_exec_to`: firmware's advertised command timeout (ms).
pub const CMD_EXEC_TO: u32 = 0xff8;
/// `health_counter`: low 24 bits keep changing while firmware lives.
pub const HEALTH_COUNTER: u32 = 0x1010;
/// Bytes of BAR0 the driver touches (the initialization segment through
/// the health counter).
pub const SEGMENT_LEN: u32 = 0x1014;

/// `initializing` bit 31.
pub const INITIALIZING_BIT: u32 = 1 << 31;
/// What a read of a device that left the bus returns.
pub const ALL_ONES: u32 = u32::MAX;

/// The firmware version from `fw_rev` and `cmdif_rev_fw_sub`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FwVersion {
    /// Major.
    pub major: u16,
    /// Minor.
    pub minor: u16,
    /// Subminor.
    pub subminor: u16,
}

impl FwVersion {
    /// Decodes the two registers.
    pub const fn from_registers(fw_rev: u32, cmdif_rev_fw_sub: u32) -> Self {
        // CAST: each is a masked 16-bit half.
        Self {
            major: (fw_rev & 0xffff) as u16,
            minor: (fw_rev >> 16) as u16,
            subminor: (cmdif_rev_fw_sub & 0xffff) as u16,
        }
    }
}

impl core::fmt::Display for FwVersion {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.subminor)
    }
}

/// Checks the command-interface revision in `cmdif_rev_fw_sub`.
///
/// # Errors
/// [`CmdqError::DeviceGone`] for all ones, [`CmdqError::BadCmdifRevision`]
/// for anything but [`CMDIF_REV`].
pub const fn check_cmdif_revision(cmdif_rev_fw_sub: u32) -> Result<(), CmdqError> {
    if cmdif_rev_fw_sub == ALL_ONES {
        return Err(CmdqError::DeviceGone);
    }
    // CAST: the upper 16 bits.
    let rev = (cmdif_rev_fw_sub >> 16) as u16;
    if rev == CMDIF_REV {
        Ok(())
    } else {
        Err(CmdqError::BadCmdifRevision(rev))
    }
}

/// Whether `initializing` says firmware is still coming up.
///
/// # Errors
/// [`CmdqError::DeviceGone`] for all ones.
pub const fn is_initializing(initializing: u32) -> Result<bool, CmdqError> {
    if initializing == ALL_ONES {
        return Err(CmdqError::DeviceGone);
    }
    Ok(initializing & INITIALIZING_BIT != 0)
}

/// The queue's shape, from `cmdq_addr_l_sz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Geometry {
    log_size: u8,
    log_stride: u8,
}

/// Smallest stride: one entry.
const MIN_LOG_STRIDE: u8 = 6;
/// The whole queue lives in one 4 KiB page (`log_size + log_stride <= 12`).
const MAX_LOG_QUEUE_BYTES: u8 = 12;

const _: () = assert!(1usize << MIN_LOG_STRIDE == ENTRY_SIZE);

impl Geometry {
    /// Decodes and checks `cmdq_addr_l_sz` as read.
    ///
    /// # Errors
    /// [`CmdqError::DeviceGone`] for all ones, [`CmdqError::BadGeometry`]
    /// outside `2^log_size <= 32`, `2^log_stride >= 64`,
    /// `log_size + log_stride <= 12`.
    pub const fn from_register(cmdq_addr_l_sz: u32) -> Result<Self, CmdqError> {
        if cmdq_addr_l_sz == ALL_ONES {
            return Err(CmdqError::DeviceGone);
        }
        // CAST: 4-bit fields.
        let log_size = ((cmdq_addr_l_sz >> 4) & 0xf) as u8;
        let log_stride = (cmdq_addr_l_sz & 0xf) as u8;
        Self::new(log_size, log_stride)
    }

    /// A geometry of `2^log_size` slots `2^log_stride` bytes apart.
    ///
    /// # Errors
    /// [`CmdqError::BadGeometry`] outside the limits.
    pub const fn new(log_size: u8, log_stride: u8) -> Result<Self, CmdqError> {
        let fits = (1usize << (log_size & 0xf)) <= MAX_SLOTS
            && log_size <= 5
            && log_stride >= MIN_LOG_STRIDE
            && log_size.saturating_add(log_stride) <= MAX_LOG_QUEUE_BYTES;
        if fits {
            Ok(Self {
                log_size,
                log_stride,
            })
        } else {
            Err(CmdqError::BadGeometry {
                log_size,
                log_stride,
            })
        }
    }

    /// Number of slots (1..=32).
    pub const fn slots(&self) -> u8 {
        1 << self.log_size
    }

    /// `log_cmdq_size`.
    pub const fn log_size(&self) -> u8 {
        self.log_size
    }

    /// `log_cmdq_stride`.
    pub const fn log_stride(&self) -> u8 {
        self.log_stride
    }

    /// Byte offset of slot `slot`'s entry in the queue page (`None` for a
    /// slot the queue does not have).
    pub const fn entry_offset(&self, slot: u8) -> Option<usize> {
        if slot >= self.slots() {
            return None;
        }
        Some((slot as usize) << self.log_stride)
    }
}

/// The two words that program the queue's bus address `addr`:
/// (`cmdq_addr_h`, `cmdq_addr_l_sz`), written in that order.
///
/// # Errors
/// [`CmdqError::UnalignedQueue`] when `addr` is not 4 KiB aligned (the low
/// 12 bits of the low word carry no address).
pub const fn queue_address_words(addr: u64) -> Result<(u32, u32), CmdqError> {
    if addr & 0xfff != 0 {
        return Err(CmdqError::UnalignedQueue);
    }
    // CAST: the two halves of a u64.
    Ok(((addr >> 32) as u32, addr as u32))
}

/// `nic_interface` (`cmdq_addr_l_sz` bits 10:8): what the NIC side does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NicInterface {
    /// `MLX5_NIC_IFC_FULL`.
    Full,
    /// `MLX5_NIC_IFC_DISABLED`.
    Disabled,
    /// `MLX5_NIC_IFC_NO_DRAM_NIC`.
    NoDramNic,
    /// `MLX5_NIC_IFC_SW_RESET`.
    SwReset,
    /// Anything else.
    Other(u8),
}

impl NicInterface {
    /// Decodes bits 10:8 of `cmdq_addr_l_sz`.
    pub const fn from_register(cmdq_addr_l_sz: u32) -> Self {
        match (cmdq_addr_l_sz >> 8) & 0x7 {
            0 => Self::Full,
            1 => Self::Disabled,
            2 => Self::NoDramNic,
            7 => Self::SwReset,
            // CAST: a 3-bit field.
            other => Self::Other(other as u8),
        }
    }
}
