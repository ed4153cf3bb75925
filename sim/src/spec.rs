//! The device spec string: `sim:state=5G,seed=7,...`.
//!
//! # Grammar
//! ```text
//! spec     = "sim" [ ":" [ item *( "," item ) ] ]
//! item     = key "=" value
//! size     = digits [ "K" | "M" | "G" | "T" ]        ; binary: K = 1024, case-insensitive
//! duration = "0" | digits ( "ns" | "us" | "ms" | "s" )
//! onoff    = "on" | "off"
//! ```
//!
//! The keys, with their values, defaults and meanings, are [`KEYS`]: the
//! parser looks names up there and `Display` walks it, so help texts built
//! from it list exactly what the parser accepts.
//!
//! Bare `sim` (or `sim:`) is all defaults; each key may appear once.
//! [`SimSpec`]'s `Display` prints the shortest spec that parses back to the
//! same value (only keys that differ from the default); the alternate form
//! (`{:#}`) prints every key.

use core::fmt;
use core::time::Duration;

use crate::firmware::MAX_VFS;

/// A parsed device spec (see the module docs for the grammar).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimSpec {
    /// Exact byte size of a full, single-image SAVE (`state=`).
    pub state: u64,
    /// Generator seed (`seed=`).
    pub seed: u64,
    /// Chunk mode capability (`chunks=`).
    pub chunks: bool,
    /// PRE_COPY capabilities: multi-load and tracking (`precopy=`).
    pub precopy: bool,
    /// The VF's `migratable` cap (`migratable=`).
    pub migratable: bool,
    /// Smallest object size (`object=MIN-...`).
    pub object_min: u64,
    /// Largest object size (`object=...-MAX`).
    pub object_max: u64,
    /// Bytes dirtied per workload tick (`dirty=`).
    pub dirty: u64,
    /// Modelled firmware bandwidth in bytes/s, `None` = unlimited (`fw-rate=`).
    pub fw_rate: Option<u64>,
    /// Modelled per-command latency (`latency=`).
    pub latency: Duration,
    /// Number of VFs (`vfs=`).
    pub vfs: u16,
}

/// 1 KiB.
const KIB: u64 = 1024;
/// 1 MiB.
const MIB: u64 = 1024 * KIB;
/// 1 GiB.
const GIB: u64 = 1024 * MIB;

impl SimSpec {
    /// Every default (`sim`).
    pub const DEFAULT: Self = Self {
        state: GIB,
        seed: 1,
        chunks: true,
        precopy: true,
        migratable: true,
        object_min: 64 * KIB,
        object_max: 12 * MIB,
        dirty: 0,
        fw_rate: None,
        latency: Duration::ZERO,
        vfs: 1,
    };

    /// Parse a spec string.
    ///
    /// # Errors
    /// [`SpecError`] naming the offending key and value.
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let rest = text
            .strip_prefix("sim")
            .ok_or_else(|| SpecError::new(SpecErrorKind::NotSim, "", text))?;
        let items = match rest.strip_prefix(':') {
            Some(items) => items,
            None if rest.is_empty() => "",
            None => return Err(SpecError::new(SpecErrorKind::NotSim, "", text)),
        };
        let mut spec = Self::DEFAULT;
        let mut seen = Seen::default();
        if items.is_empty() {
            return Ok(spec);
        }
        for item in items.split(',') {
            let Some((key, value)) = item.split_once('=') else {
                return Err(SpecError::new(SpecErrorKind::MissingValue, item, ""));
            };
            let key_id = Key::from_name(key)
                .ok_or_else(|| SpecError::new(SpecErrorKind::UnknownKey, key, value))?;
            if !seen.insert(key_id) {
                return Err(SpecError::new(SpecErrorKind::DuplicateKey, key, value));
            }
            let bad = || SpecError::new(SpecErrorKind::BadValue(key_id.expected()), key, value);
            match key_id {
                Key::State => spec.state = parse_size(value).ok_or_else(bad)?,
                Key::Seed => spec.seed = value.parse().map_err(|_| bad())?,
                Key::Chunks => spec.chunks = parse_onoff(value).ok_or_else(bad)?,
                Key::Precopy => spec.precopy = parse_onoff(value).ok_or_else(bad)?,
                Key::Migratable => spec.migratable = parse_onoff(value).ok_or_else(bad)?,
                Key::Object => {
                    let (min, max) = value.split_once('-').ok_or_else(bad)?;
                    let (min, max) = (
                        parse_size(min).ok_or_else(bad)?,
                        parse_size(max).ok_or_else(bad)?,
                    );
                    if min == 0 || min > max {
                        return Err(bad());
                    }
                    spec.object_min = min;
                    spec.object_max = max;
                }
                Key::Dirty => spec.dirty = parse_size(value).ok_or_else(bad)?,
                Key::FwRate => {
                    spec.fw_rate = if value == "off" {
                        None
                    } else {
                        let size = value.strip_suffix("/s").unwrap_or(value);
                        Some(parse_size(size).filter(|r| *r > 0).ok_or_else(bad)?)
                    }
                }
                Key::Latency => spec.latency = parse_duration(value).ok_or_else(bad)?,
                Key::Vfs => {
                    let n: u16 = value.parse().map_err(|_| bad())?;
                    // CAST: MAX_VFS is a small constant.
                    if n == 0 || usize::from(n) > MAX_VFS {
                        return Err(bad());
                    }
                    spec.vfs = n;
                }
            }
        }
        Ok(spec)
    }
}

impl Default for SimSpec {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl core::str::FromStr for SimSpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for SimSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all = f.alternate();
        let mut sep = Sep::default();
        f.write_str("sim")?;
        for doc in &KEYS {
            if all || !self.same_value(&Self::DEFAULT, doc.key) {
                let value = ValueOf {
                    spec: self,
                    key: doc.key,
                };
                write!(f, "{}{}={value}", sep.next(), doc.name)?;
            }
        }
        Ok(())
    }
}

impl SimSpec {
    /// Whether `self` and `other` agree on `key`.
    fn same_value(&self, other: &Self, key: Key) -> bool {
        match key {
            Key::State => self.state == other.state,
            Key::Seed => self.seed == other.seed,
            Key::Chunks => self.chunks == other.chunks,
            Key::Precopy => self.precopy == other.precopy,
            Key::Migratable => self.migratable == other.migratable,
            Key::Object => {
                (self.object_min, self.object_max) == (other.object_min, other.object_max)
            }
            Key::Dirty => self.dirty == other.dirty,
            Key::FwRate => self.fw_rate == other.fw_rate,
            Key::Latency => self.latency == other.latency,
            Key::Vfs => self.vfs == other.vfs,
        }
    }
}

/// Displays one key's value of a spec as the grammar writes it.
struct ValueOf<'a> {
    spec: &'a SimSpec,
    key: Key,
}

impl fmt::Display for ValueOf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.spec;
        match self.key {
            Key::State => Size(s.state).fmt(f),
            Key::Seed => s.seed.fmt(f),
            Key::Chunks => OnOff(s.chunks).fmt(f),
            Key::Precopy => OnOff(s.precopy).fmt(f),
            Key::Migratable => OnOff(s.migratable).fmt(f),
            Key::Object => write!(f, "{}-{}", Size(s.object_min), Size(s.object_max)),
            Key::Dirty => Size(s.dirty).fmt(f),
            Key::FwRate => match s.fw_rate {
                Some(rate) => write!(f, "{}/s", Size(rate)),
                None => f.write_str("off"),
            },
            Key::Latency => Dur(s.latency).fmt(f),
            Key::Vfs => s.vfs.fmt(f),
        }
    }
}

/// Emits ":" before the first item and "," before the others.
#[derive(Default)]
struct Sep(bool);

impl Sep {
    fn next(&mut self) -> &'static str {
        if core::mem::replace(&mut self.0, true) {
            ","
        } else {
            ":"
        }
    }
}

/// The spec keys, for duplicate detection and error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    State,
    Seed,
    Chunks,
    Precopy,
    Migratable,
    Object,
    Dirty,
    FwRate,
    Latency,
    Vfs,
}

/// One key of the grammar, as a help text shows it.
#[derive(Clone, Copy, Debug)]
pub struct KeyDoc {
    /// The key.
    pub name: &'static str,
    /// Another name the parser accepts for it.
    pub alias: Option<&'static str>,
    /// The value's grammar (`SIZE`, `on|off`, ...; see the module docs).
    pub value: &'static str,
    /// What it sets.
    pub meaning: &'static str,
    key: Key,
}

impl KeyDoc {
    /// The default value as a spec writes it (`1G`, `on`, `64K-12M`): what
    /// [`SimSpec::DEFAULT`] holds, so the help cannot claim another.
    #[must_use]
    pub fn default_value(&self) -> impl fmt::Display + 'static {
        ValueOf {
            spec: &SimSpec::DEFAULT,
            key: self.key,
        }
    }
}

/// Every key, in the order `Display` writes them. The parser accepts
/// exactly these names (and aliases).
pub const KEYS: [KeyDoc; 10] = [
    KeyDoc {
        name: "state",
        alias: None,
        value: "SIZE",
        meaning: "exact bytes of the full image a single non-chunk SAVE produces",
        key: Key::State,
    },
    KeyDoc {
        name: "seed",
        alias: None,
        value: "N",
        meaning: "generator seed (object sizes and content)",
        key: Key::Seed,
    },
    KeyDoc {
        name: "chunks",
        alias: None,
        value: "on|off",
        meaning: "chunk mode offered (migration_in_chunks, PF and VF)",
        key: Key::Chunks,
    },
    KeyDoc {
        name: "precopy",
        alias: None,
        value: "on|off",
        meaning: "PRE_COPY offered (migration_multi_load + migration_tracking_state)",
        key: Key::Precopy,
    },
    KeyDoc {
        name: "migratable",
        alias: None,
        value: "on|off",
        meaning: "the VF's migratable cap",
        key: Key::Migratable,
    },
    KeyDoc {
        name: "object",
        alias: None,
        value: "MIN-MAX",
        meaning: "object sizes, uniform in [MIN, MAX]",
        key: Key::Object,
    },
    KeyDoc {
        name: "dirty",
        alias: None,
        value: "SIZE",
        meaning: "bytes the guest workload dirties per tick while running",
        key: Key::Dirty,
    },
    KeyDoc {
        name: "fw-rate",
        alias: None,
        value: "SIZE[/s]|off",
        meaning: "modelled firmware bandwidth (timing model)",
        key: Key::FwRate,
    },
    KeyDoc {
        name: "latency",
        alias: None,
        value: "DURATION",
        meaning: "modelled per-command latency (timing model)",
        key: Key::Latency,
    },
    KeyDoc {
        name: "vfs",
        alias: Some("vf"),
        value: "N",
        meaning: "number of VFs; VF n uses seed + n",
        key: Key::Vfs,
    },
];

impl Key {
    fn from_name(name: &str) -> Option<Self> {
        KEYS.iter()
            .find(|doc| doc.name == name || doc.alias == Some(name))
            .map(|doc| doc.key)
    }

    /// What a good value looks like, for the error message.
    fn expected(self) -> &'static str {
        match self {
            Self::State | Self::Dirty => "a size like 20M or 5G",
            Self::Seed => "an unsigned 64-bit integer",
            Self::Chunks | Self::Precopy | Self::Migratable => "on or off",
            Self::Object => "MIN-MAX sizes with 0 < MIN <= MAX, like 64K-12M",
            Self::FwRate => "a non-zero rate like 2G/s, or off",
            Self::Latency => "a duration like 0, 50us, 2ms or 1s",
            Self::Vfs => "a VF count from 1 to the sim's MAX_VFS",
        }
    }

    /// Bit for the duplicate-key set.
    fn bit(self) -> u16 {
        // CAST: fieldless enum discriminant < 16.
        1u16 << (self as u16)
    }
}

/// Keys already given.
#[derive(Default)]
struct Seen(u16);

impl Seen {
    /// Record `key`; `false` if it was already there.
    fn insert(&mut self, key: Key) -> bool {
        let fresh = self.0 & key.bit() == 0;
        self.0 |= key.bit();
        fresh
    }
}

/// Binary size suffixes, largest first (for display).
const SUFFIXES: [(char, u64); 4] = [('T', 1024 * GIB), ('G', GIB), ('M', MIB), ('K', KIB)];

/// Parse `digits [K|M|G|T]` (binary, case-insensitive).
///
/// Hand-written because the grammar is the documented spec's and must stay
/// exactly that: `parse-size` (no_std) also accepts `1.5G`, `20 MB` and
/// `20MiB`, with powers of 1000 unless configured, so a spec would mean more
/// than the README says; `bytesize`'s parser allocates (its errors are
/// `String`s) and the sim is allocation-free.
#[must_use]
pub fn parse_size(text: &str) -> Option<u64> {
    let (digits, mult) = match text.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let upper = c.to_ascii_uppercase();
            let mult = SUFFIXES.iter().find(|(s, _)| *s == upper)?.1;
            (text.get(..text.len().saturating_sub(1))?, mult)
        }
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// Parse `on` / `off`.
fn parse_onoff(text: &str) -> Option<bool> {
    match text {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
}

/// Parse `0` or `digits (ns|us|ms|s)`.
///
/// Hand-written because `humantime`, the usual crate, needs `std`, and the
/// spec is parsed inside the kernel module too.
#[must_use]
pub fn parse_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = (text.get(..split)?, text.get(split..)?);
    if digits.is_empty() {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    match unit {
        "ns" => Some(Duration::from_nanos(n)),
        "us" => Some(Duration::from_nanos(n.checked_mul(1_000)?)),
        "ms" => Some(Duration::from_nanos(n.checked_mul(1_000_000)?)),
        "s" => Some(Duration::from_secs(n)),
        _ => None,
    }
}

/// Displays a byte count with the largest exact binary suffix.
#[derive(Clone, Copy, Debug)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (suffix, mult) in SUFFIXES {
            if self.0 != 0 && self.0.checked_rem(mult) == Some(0) {
                let n = self.0.checked_div(mult).unwrap_or(0);
                return write!(f, "{n}{suffix}");
            }
        }
        write!(f, "{}", self.0)
    }
}

/// Displays a duration in the largest exact unit of the spec grammar.
#[derive(Clone, Copy, Debug)]
pub struct Dur(pub Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.is_zero() {
            f.write_str("0")
        } else if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else {
            let nanos = d.as_nanos();
            if nanos % 1_000_000 == 0 {
                write!(f, "{}ms", nanos / 1_000_000)
            } else if nanos % 1_000 == 0 {
                write!(f, "{}us", nanos / 1_000)
            } else {
                write!(f, "{nanos}ns")
            }
        }
    }
}

/// Displays a flag as `on` / `off`.
struct OnOff(bool);

impl fmt::Display for OnOff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0 { "on" } else { "off" })
    }
}

/// What was wrong with a spec string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpecErrorKind {
    /// The text does not start with `sim` (or `sim:`).
    NotSim,
    /// A key the grammar does not know.
    UnknownKey,
    /// An item without `=`.
    MissingValue,
    /// A key given twice.
    DuplicateKey,
    /// A value that does not parse; carries what was expected.
    BadValue(&'static str),
}

/// Longest key kept in an error (longer ones are cut, marked with `...`).
const ERR_KEY_CAP: usize = 24;
/// Longest value kept in an error.
const ERR_VALUE_CAP: usize = 48;

/// A spec parse error; `Display` names the bad key and value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    kind: SpecErrorKind,
    key: heapless::String<ERR_KEY_CAP>,
    value: heapless::String<ERR_VALUE_CAP>,
}

impl SpecError {
    fn new(kind: SpecErrorKind, key: &str, value: &str) -> Self {
        Self {
            kind,
            key: clipped(key),
            value: clipped(value),
        }
    }

    /// What went wrong.
    #[must_use]
    pub fn kind(&self) -> SpecErrorKind {
        self.kind
    }

    /// The offending key (cut to a bounded length).
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The offending value (cut to a bounded length).
    #[must_use]
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// Copy `text` into a bounded string, marking a cut with `...`.
fn clipped<const N: usize>(text: &str) -> heapless::String<N> {
    let mut out = heapless::String::new();
    for c in text.chars() {
        if out.len().saturating_add(c.len_utf8()) > N.saturating_sub(3) {
            // Room for "..." is always left (N ≥ 3 for every use).
            let _ = out.push_str("...");
            return out;
        }
        let _ = out.push(c);
    }
    out
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            SpecErrorKind::NotSim => write!(
                f,
                "sim spec: \"{}\" is not a sim spec: expected \"sim\" or \"sim:key=value,...\"",
                self.value
            ),
            SpecErrorKind::UnknownKey => {
                write!(
                    f,
                    "sim spec: unknown key \"{}\": expected one of ",
                    self.key
                )?;
                for (i, doc) in KEYS.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{}", doc.name)?;
                }
                Ok(())
            }
            SpecErrorKind::MissingValue => {
                write!(
                    f,
                    "sim spec: item \"{}\" has no value: expected key=value",
                    self.key
                )
            }
            SpecErrorKind::DuplicateKey => {
                write!(f, "sim spec: key \"{}\" is given more than once", self.key)
            }
            SpecErrorKind::BadValue(expected) => write!(
                f,
                "sim spec: bad value \"{}\" for key \"{}\": expected {expected}",
                self.value, self.key
            ),
        }
    }
}

impl core::error::Error for SpecError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn bare_sim_is_default() {
        assert_eq!(SimSpec::parse("sim").unwrap(), SimSpec::DEFAULT);
        assert_eq!(SimSpec::parse("sim:").unwrap(), SimSpec::DEFAULT);
        assert_eq!(SimSpec::DEFAULT.to_string(), "sim");
    }

    #[test]
    fn full_spec_parses() {
        let s = SimSpec::parse(
            "sim:state=5G,seed=7,chunks=off,precopy=off,migratable=off,object=4K-1M,\
             dirty=1M,fw-rate=2G/s,latency=50us,vfs=2",
        )
        .unwrap();
        assert_eq!(s.state, 5 * GIB);
        assert_eq!(s.seed, 7);
        assert!(!s.chunks && !s.precopy && !s.migratable);
        assert_eq!((s.object_min, s.object_max), (4 * KIB, MIB));
        assert_eq!(s.dirty, MIB);
        assert_eq!(s.fw_rate, Some(2 * GIB));
        assert_eq!(s.latency, Duration::from_micros(50));
        assert_eq!(s.vfs, 2);
        assert_eq!(
            s.to_string(),
            "sim:state=5G,seed=7,chunks=off,precopy=off,migratable=off,object=4K-1M,\
             dirty=1M,fw-rate=2G/s,latency=50us,vfs=2"
        );
        assert_eq!(SimSpec::parse(&s.to_string()).unwrap(), s);
        assert_eq!(SimSpec::parse(&std::format!("{s:#}")).unwrap(), s);
    }

    #[test]
    fn errors_name_key_and_value() {
        let e = SimSpec::parse("sim:state=5Q").unwrap_err();
        assert_eq!(
            e.to_string(),
            "sim spec: bad value \"5Q\" for key \"state\": expected a size like 20M or 5G"
        );
        assert_eq!(
            SimSpec::parse("sim:color=red").unwrap_err().kind(),
            SpecErrorKind::UnknownKey
        );
        assert_eq!(
            SimSpec::parse("sim:seed=1,seed=2").unwrap_err().kind(),
            SpecErrorKind::DuplicateKey
        );
        assert_eq!(
            SimSpec::parse("vfio:0000:01:00.0").unwrap_err().kind(),
            SpecErrorKind::NotSim
        );
        assert_eq!(
            SimSpec::parse("simulate").unwrap_err().kind(),
            SpecErrorKind::NotSim
        );
        assert_eq!(
            SimSpec::parse("sim:state").unwrap_err().kind(),
            SpecErrorKind::MissingValue
        );
        assert!(SimSpec::parse("sim:object=2M-1M").is_err());
        assert!(SimSpec::parse("sim:state=99999999999T").is_err());
        assert!(SimSpec::parse("sim:latency=5").is_err());
        assert!(SimSpec::parse("sim:vfs=0").is_err());
        let long = "x".repeat(500);
        let e = SimSpec::parse(&std::format!("sim:state={long}")).unwrap_err();
        assert!(e.value().ends_with("...") && e.value().len() <= ERR_VALUE_CAP);
    }

    /// Every key of the grammar is in [`KEYS`] once, and what the table
    /// says is what the parser does: each name and alias parses, with the
    /// documented default giving the default spec.
    #[test]
    fn the_key_table_is_the_grammar() {
        let mut seen = Seen::default();
        for doc in &KEYS {
            assert!(seen.insert(doc.key), "{} listed twice", doc.name);
            for name in core::iter::once(doc.name).chain(doc.alias) {
                let text = std::format!("sim:{name}={}", doc.default_value());
                assert_eq!(SimSpec::parse(&text), Ok(SimSpec::DEFAULT), "{text}");
            }
        }
        // An exhaustive match: a new key fails to compile here until it is
        // counted, and then fails the count until it is in the table.
        let variants = |key: Key| match key {
            Key::State
            | Key::Seed
            | Key::Chunks
            | Key::Precopy
            | Key::Migratable
            | Key::Object
            | Key::Dirty
            | Key::FwRate
            | Key::Latency
            | Key::Vfs => 10,
        };
        assert_eq!(seen.0.count_ones(), variants(Key::State));
        assert_eq!(
            std::format!("{:#}", SimSpec::DEFAULT),
            "sim:state=1G,seed=1,chunks=on,precopy=on,migratable=on,object=64K-12M,dirty=0,\
             fw-rate=off,latency=0,vfs=1"
        );
        let e = SimSpec::parse("sim:color=red").unwrap_err();
        assert_eq!(
            e.to_string(),
            "sim spec: unknown key \"color\": expected one of state, seed, chunks, precopy, \
             migratable, object, dirty, fw-rate, latency, vfs"
        );
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("20M"), Some(20 * MIB));
        assert_eq!(parse_size("5g"), Some(5 * GIB));
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size("1.5G"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(Size(1536).to_string(), "1536");
        assert_eq!(Size(3 * MIB).to_string(), "3M");
        assert_eq!(parse_duration("2ms"), Some(Duration::from_millis(2)));
        assert_eq!(parse_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(Dur(Duration::from_micros(1500)).to_string(), "1500us");
        assert_eq!(Dur(Duration::from_nanos(7)).to_string(), "7ns");
    }
}
