//! The kernel errno vocabulary the core reports.
//!
//! The Linux driver answers every failure with a specific negative errno, and
//! VMMs (QEMU) branch on some of them (`ENOMSG` in PRE_COPY above all). The
//! core names the errno of each situation so that both shims can report it
//! faithfully: `shim-linux` returns `-(errno.code())`, `shim-userspace` maps it
//! to an `io::Error`.

use core::fmt;

macro_rules! errno_table {
    ($( $(#[$doc:meta])* $name:ident = $code:literal, $text:literal; )*) => {
        /// A Linux errno value, named as in `<errno.h>`.
        ///
        /// Numbers are the asm-generic ones (x86, arm64, riscv, …); alpha,
        /// mips, parisc and sparc use other numbers for a few of them.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        #[allow(clippy::upper_case_acronyms)]
        pub enum Errno {
            $( $(#[$doc])* $name, )*
        }

        impl Errno {
            /// Every errno the core can report.
            pub const ALL: &'static [Self] = &[$(Self::$name),*];

            /// The positive errno number (asm-generic numbering).
            pub const fn code(self) -> i32 {
                match self { $(Self::$name => $code,)* }
            }

            /// The symbolic name, e.g. `"ENOMSG"`.
            pub const fn name(self) -> &'static str {
                match self { $(Self::$name => stringify!($name),)* }
            }

            /// The errno with this number, if the core knows it.
            ///
            /// ```
            /// use mlx5vf_core::errno::Errno;
            /// assert_eq!(Errno::from_code(42), Some(Errno::ENOMSG));
            /// assert_eq!(Errno::from_code(4711), None);
            /// ```
            pub fn from_code(code: i32) -> Option<Self> {
                Self::ALL.iter().copied().find(|e| e.code() == code)
            }

            /// The usual `strerror()` text.
            pub const fn description(self) -> &'static str {
                match self { $(Self::$name => $text,)* }
            }
        }
    };
}

errno_table! {
    /// Operation not permitted.
    EPERM = 1, "Operation not permitted";
    /// I/O error: firmware failed or the session is broken.
    EIO = 5, "Input/output error";
    /// Try again: no data yet on a non-blocking file.
    EAGAIN = 11, "Resource temporarily unavailable";
    /// Out of memory, or a record larger than the device can load.
    ENOMEM = 12, "Cannot allocate memory";
    /// Bad address (a copy to or from the caller's memory failed).
    EFAULT = 14, "Bad address";
    /// Device or resource busy.
    EBUSY = 16, "Device or resource busy";
    /// No such device: the file was disabled or is in error.
    ENODEV = 19, "No such device";
    /// Invalid argument, or a transition the state graph does not allow.
    EINVAL = 22, "Invalid argument";
    /// Inappropriate ioctl for this file.
    ENOTTY = 25, "Inappropriate ioctl for device";
    /// Illegal seek: migration files are streams.
    ESPIPE = 29, "Illegal seek";
    /// No message of desired type: PRE_COPY data drained for now.
    ENOMSG = 42, "No message of desired type";
    /// Invalid request descriptor (command delivery signature/token error).
    EBADR = 53, "Invalid request descriptor";
    /// Protocol error: a C caller built against another version of the
    /// library's header (ABI version or structure sizes differ).
    EPROTO = 71, "Protocol error";
    /// Operation not supported (e.g. an unknown mandatory record).
    EOPNOTSUPP = 95, "Operation not supported";
    /// Transport endpoint is not connected: the VF was detached from its PF.
    ENOTCONN = 107, "Transport endpoint is not connected";
    /// Timer expired.
    ETIMEDOUT = 110, "Connection timed out";
    /// Remote I/O error: a command was delivered and firmware refused it.
    EREMOTEIO = 121, "Remote I/O error";
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.description())
    }
}

impl core::error::Error for Errno {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_asm_generic() {
        assert_eq!(Errno::ENOMSG.code(), 42);
        assert_eq!(Errno::ENOTCONN.code(), 107);
        assert_eq!(Errno::EOPNOTSUPP.code(), 95);
        assert_eq!(Errno::ESPIPE.code(), 29);
        assert_eq!(Errno::EREMOTEIO.code(), 121);
    }

    #[test]
    fn names_are_unique() {
        for (i, a) in Errno::ALL.iter().enumerate() {
            for b in &Errno::ALL[i + 1..] {
                assert_ne!(a.code(), b.code());
                assert_ne!(a.name(), b.name());
            }
        }
    }
}
