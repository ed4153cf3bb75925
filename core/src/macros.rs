//! Small declarative helpers shared by the core's modules.

/// Declares a code enum that tolerates unknown values: every listed code gets
/// a variant, anything else decodes to `Unknown(raw)`. Both conversion
/// directions and the Linux-style name come from the one table, so they
/// cannot drift apart.
macro_rules! enum_with_unknown {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident($ty:ty) {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $linux:literal ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value this table does not know.
            Unknown($ty),
        }

        impl From<$ty> for $name {
            fn from(raw: $ty) -> Self {
                match raw {
                    $( $value => Self::$variant, )*
                    other => Self::Unknown(other),
                }
            }
        }

        impl From<$name> for $ty {
            fn from(value: $name) -> Self {
                match value {
                    $( $name::$variant => $value, )*
                    $name::Unknown(raw) => raw,
                }
            }
        }

        impl $name {
            /// Every known value.
            #[allow(dead_code)]
            pub const KNOWN: &'static [Self] = &[$(Self::$variant),*];

            /// The raw value, usable in constant expressions.
            #[allow(dead_code)]
            pub const fn raw(self) -> $ty {
                match self {
                    $( Self::$variant => $value, )*
                    Self::Unknown(raw) => raw,
                }
            }

            /// The name used by the Linux headers, or `None` for unknown values.
            pub const fn linux_name(self) -> Option<&'static str> {
                match self {
                    $( Self::$variant => Some($linux), )*
                    Self::Unknown(_) => None,
                }
            }
        }
    };
}
pub(crate) use enum_with_unknown;

/// Logs a driver decision through `defmt` (level `debug`) when the `defmt`
/// feature is on; compiles to nothing otherwise (the core has no other
/// logging). defmt filters at compile time: build with `DEFMT_LOG=debug` to
/// keep these.
macro_rules! trace {
    ($($arg:tt)*) => {
        #[cfg(feature = "defmt")]
        defmt::debug!($($arg)*);
    };
}
pub(crate) use trace;

/// Logs something that went wrong (level `warn`), e.g. a file failing.
macro_rules! trace_warn {
    ($($arg:tt)*) => {
        #[cfg(feature = "defmt")]
        defmt::warn!($($arg)*);
    };
}
pub(crate) use trace_warn;
