//! Opcodes, command status codes and the error a failed command produces.

use core::fmt;

use crate::errno::Errno;
use crate::macros::enum_with_unknown;

enum_with_unknown! {
    /// Firmware command opcodes (`MLX5_CMD_OP_*`) this project sends or parses.
    pub enum Opcode(u16) {
        /// Query capabilities of this or another function.
        QueryHcaCap = 0x100 => "QUERY_HCA_CAP",
        /// Initialize the function (after its pages and capabilities).
        InitHca = 0x102 => "INIT_HCA",
        /// Tear the function down.
        TeardownHca = 0x103 => "TEARDOWN_HCA",
        /// Enable a function (the PF itself or one of its VFs).
        EnableHca = 0x104 => "ENABLE_HCA",
        /// Disable a function.
        DisableHca = 0x105 => "DISABLE_HCA",
        /// How many pages firmware wants.
        QueryPages = 0x107 => "QUERY_PAGES",
        /// Give firmware pages, or take them back.
        ManagePages = 0x108 => "MANAGE_PAGES",
        /// Set capabilities of the issuing function.
        SetHcaCap = 0x109 => "SET_HCA_CAP",
        /// Query the interface step sequence IDs.
        QueryIssi = 0x10a => "QUERY_ISSI",
        /// Choose the interface step sequence ID.
        SetIssi = 0x10b => "SET_ISSI",
        /// Create a memory key.
        CreateMkey = 0x200 => "CREATE_MKEY",
        /// Destroy a memory key.
        DestroyMkey = 0x202 => "DESTROY_MKEY",
        /// Suspend a VHCA (initiator or responder side).
        SuspendVhca = 0x115 => "SUSPEND_VHCA",
        /// Resume a VHCA (responder or initiator side).
        ResumeVhca = 0x116 => "RESUME_VHCA",
        /// Query the size of the next SAVE.
        QueryVhcaMigrationState = 0x117 => "QUERY_VHCA_MIGRATION_STATE",
        /// Save (a chunk of) the VHCA state into a buffer.
        SaveVhcaState = 0x118 => "SAVE_VHCA_STATE",
        /// Load an image into a suspended VHCA.
        LoadVhcaState = 0x119 => "LOAD_VHCA_STATE",
        /// Allocate a protection domain.
        AllocPd = 0x800 => "ALLOC_PD",
        /// Free a protection domain.
        DeallocPd = 0x801 => "DEALLOC_PD",
        /// Create a general object (the page tracker: obj_type 0x46).
        CreateGeneralObject = 0xa00 => "CREATE_GENERAL_OBJECT",
        /// Modify a general object (start a page-tracker report).
        ModifyGeneralObject = 0xa01 => "MODIFY_GENERAL_OBJECT",
        /// Query a general object (the page tracker's state).
        QueryGeneralObject = 0xa02 => "QUERY_GENERAL_OBJECT",
        /// Destroy a general object.
        DestroyGeneralObject = 0xa03 => "DESTROY_GENERAL_OBJECT",
    }
}

enum_with_unknown! {
    /// The status byte of a command output (`MLX5_CMD_STAT_*`).
    pub enum CmdStatus(u8) {
        /// Success.
        Ok = 0x00 => "OK",
        /// Internal error.
        IntErr = 0x01 => "INT_ERR",
        /// Unknown or unsupported opcode.
        BadOpErr = 0x02 => "BAD_OP_ERR",
        /// A parameter is invalid.
        BadParamErr = 0x03 => "BAD_PARAM_ERR",
        /// The system is in a state that cannot serve the command.
        BadSysStateErr = 0x04 => "BAD_SYS_STATE_ERR",
        /// A resource named by the command does not exist.
        BadResErr = 0x05 => "BAD_RES_ERR",
        /// A resource is busy.
        ResBusy = 0x06 => "RES_BUSY",
        /// A limit was exceeded.
        LimErr = 0x08 => "LIM_ERR",
        /// A resource is in a state that cannot serve the command.
        BadResStateErr = 0x09 => "BAD_RES_STATE_ERR",
        /// Bad index.
        IxErr = 0x0a => "IX_ERR",
        /// No resources available.
        NoResErr = 0x0f => "NO_RES_ERR",
        /// Bad QP state.
        BadQpStateErr = 0x10 => "BAD_QP_STATE_ERR",
        /// Bad packet.
        BadPktErr = 0x30 => "BAD_PKT_ERR",
        /// Bad size of outstanding CQEs.
        BadSizeOutsCqesErr = 0x40 => "BAD_SIZE_OUTS_CQES_ERR",
        /// Input length is wrong for the command.
        BadInpLenErr = 0x50 => "BAD_INP_LEN_ERR",
        /// Output length is wrong for the command.
        BadOutpLenErr = 0x51 => "BAD_OUTP_LEN_ERR",
    }
}

impl CmdStatus {
    /// The errno Linux reports for this status (`cmd_status_to_err`); any
    /// status not in the table maps to `EIO`.
    pub const fn errno(self) -> Option<Errno> {
        Some(match self {
            Self::Ok => return None,
            Self::IntErr | Self::BadSysStateErr | Self::BadInpLenErr | Self::BadOutpLenErr => {
                Errno::EIO
            }
            Self::BadOpErr
            | Self::BadParamErr
            | Self::BadResErr
            | Self::BadResStateErr
            | Self::IxErr
            | Self::BadQpStateErr
            | Self::BadPktErr
            | Self::BadSizeOutsCqesErr => Errno::EINVAL,
            Self::ResBusy => Errno::EBUSY,
            Self::LimErr => Errno::ENOMEM,
            Self::NoResErr => Errno::EAGAIN,
            Self::Unknown(_) => Errno::EIO,
        })
    }
}

impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.linux_name() {
            Some(name) => write!(f, "{name}({:#x})", u16::from(*self)),
            None => write!(f, "opcode {:#x}", u16::from(*self)),
        }
    }
}

impl fmt::Display for CmdStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.linux_name() {
            Some(name) => write!(f, "{name}({:#x})", u8::from(*self)),
            None => write!(f, "status {:#x}", u8::from(*self)),
        }
    }
}

/// A command the firmware executed and refused: what a driver engineer wants
/// in the log line.
///
/// ```
/// use mlx5vf_core::ifc::{CmdError, CmdStatus, Opcode};
/// let e = CmdError { opcode: Opcode::SaveVhcaState, op_mod: 0,
///                    status: CmdStatus::BadResStateErr, syndrome: 0x1f2e3d };
/// assert_eq!(e.to_string(),
///     "SAVE_VHCA_STATE(0x118) op_mod 0x0 failed: status BAD_RES_STATE_ERR(0x9), syndrome 0x001f2e3d (EINVAL)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CmdError {
    /// The command.
    pub opcode: Opcode,
    /// Its op_mod.
    pub op_mod: u16,
    /// The status firmware returned (never `Ok`).
    pub status: CmdStatus,
    /// The syndrome firmware returned (a firmware-specific reason code).
    pub syndrome: u32,
}

impl CmdError {
    /// The errno Linux would report for this failure.
    pub const fn errno(&self) -> Errno {
        match self.status.errno() {
            Some(e) => e,
            None => Errno::EIO,
        }
    }
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} op_mod {:#x} failed: status {}, syndrome {:#010x} ({})",
            self.opcode,
            self.op_mod,
            self.status,
            self.syndrome,
            self.errno().name()
        )
    }
}

impl core::error::Error for CmdError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn status_table_matches_linux_mapping() {
        use CmdStatus::*;
        let table: &[(u8, CmdStatus, Errno)] = &[
            (0x01, IntErr, Errno::EIO),
            (0x02, BadOpErr, Errno::EINVAL),
            (0x03, BadParamErr, Errno::EINVAL),
            (0x04, BadSysStateErr, Errno::EIO),
            (0x05, BadResErr, Errno::EINVAL),
            (0x06, ResBusy, Errno::EBUSY),
            (0x08, LimErr, Errno::ENOMEM),
            (0x09, BadResStateErr, Errno::EINVAL),
            (0x0a, IxErr, Errno::EINVAL),
            (0x0f, NoResErr, Errno::EAGAIN),
            (0x10, BadQpStateErr, Errno::EINVAL),
            (0x30, BadPktErr, Errno::EINVAL),
            (0x40, BadSizeOutsCqesErr, Errno::EINVAL),
            (0x50, BadInpLenErr, Errno::EIO),
            (0x51, BadOutpLenErr, Errno::EIO),
        ];
        for &(raw, status, errno) in table {
            assert_eq!(CmdStatus::from(raw), status);
            assert_eq!(u8::from(status), raw);
            assert_eq!(status.errno(), Some(errno), "{status}");
        }
        assert_eq!(CmdStatus::from(0), Ok);
        assert_eq!(Ok.errno(), None);
        assert_eq!(CmdStatus::from(0x77), Unknown(0x77));
        assert_eq!(Unknown(0x77).errno(), Some(Errno::EIO));
        assert_eq!(CmdStatus::KNOWN.len(), table.len() + 1);
    }

    #[test]
    fn opcodes_round_trip() {
        for &op in Opcode::KNOWN {
            assert_eq!(Opcode::from(u16::from(op)), op);
        }
        assert_eq!(u16::from(Opcode::SaveVhcaState), 0x118);
        assert_eq!(Opcode::from(0x999).to_string(), "opcode 0x999");
    }
}
