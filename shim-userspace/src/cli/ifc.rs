//! `mlx5vf ifc`: encode and decode firmware command structures by name.
//!
//! Names are the Linux ones, without `mlx5_ifc_` and `_bits`
//! (`save_vhca_state_in`, `cmd_hca_cap_2`, …), and so are members: the set is
//! [`mlx5vf_core::ifc::LAYOUTS`], so this module holds no layout knowledge of
//! its own: it resolves member names, parses numbers and hex, and lets
//! [`Field::read`]/[`Field::write`] do the bits.
//!
//! Members of a nested structure are named with a dot, as Linux spells the
//! path: `memory_key_mkey_entry.pd` of `create_mkey_in`. The bare inner name
//! (`pd`) is accepted too when no outer member and no other nested member has
//! it. The variable tail (`klm_pas_mtt[]` of `create_mkey_in`) is an array of
//! 32-bit big-endian elements, Linux's `klm_pas_mtt[][0x20]`: element `N` is
//! named `klm_pas_mtt[N]` and lives at byte `272 + 4 * N`.

use std::fmt;
use std::fmt::Write as _;
use std::io::{self, Read, Write};

use clap::Subcommand;
use mlx5vf_core::ifc::mkey::MAX_MKEY_PAGES;
use mlx5vf_core::ifc::{Field, LAYOUTS, Layout, LayoutKind, layout_by_name};

use serde::Serialize;

use super::json::{self, Document};
use super::{EXIT_FAILURE, EXIT_USAGE, Error, parse_u64};

/// Width of the elements of `layout`'s variable tail (Linux declares the only
/// one, `create_mkey_in`'s, as `klm_pas_mtt[][0x20]`).
fn tail_bits(layout: &Layout) -> u32 {
    layout.tail.map_or(32, |t| t.element_bits)
}

/// Bytes of one element of `layout`'s tail.
fn tail_bytes(layout: &Layout) -> usize {
    // CAST: element widths are a few dozen bits.
    (tail_bits(layout) / 8) as usize
}
/// The most tail elements an encode accepts: one mkey describes at most
/// `MAX_MKEY_PAGES` pages, one 64-bit MTT entry (two elements) each. This
/// also bounds the memory an encode allocates (8 MiB).
// CAST: MAX_MKEY_PAGES is 2^20; usize is at least 32 bits.
pub const MAX_TAIL_ELEMENTS: usize = 2 * MAX_MKEY_PAGES as usize;
/// The most hex text `decode -` reads from standard input.
pub const MAX_HEX_INPUT: u64 = 64 << 20;

/// The long help of `mlx5vf ifc`.
pub const LONG_ABOUT: &str = "Encode or decode firmware command structures by their Linux \
     mlx5_ifc.h names (without mlx5_ifc_ and _bits: save_vhca_state_in, cmd_hca_cap_2, ...) and \
     member names. A debugging aid for command traces, and the way the layouts are checked \
     against Linux from outside. Usage errors (unknown name or field, bad number or hex, a value \
     too wide, a wrong length) exit 2.";

/// `mlx5vf ifc` subcommands.
#[derive(Debug, Subcommand)]
pub enum IfcCommand {
    /// Encode a structure from FIELD=VALUE pairs; prints one line of hex.
    #[command(
        long_about = "Encode a structure from FIELD=VALUE pairs and print it as one line of \
                      lowercase hex (the whole structure, big-endian as firmware reads it).\n\n\
                      Members not given are zero, except `opcode`, which defaults to the \
                      command's opcode for command inputs. Values are decimal or 0x-prefixed \
                      hex and must fit the member's width. Members of a nested structure are \
                      named with a dot (memory_key_mkey_entry.pd=5 for create_mkey_in), or by \
                      their bare name when that is unambiguous (pd=5). Tail elements of \
                      create_mkey_in are 32-bit: klm_pas_mtt[N]=VALUE extends the output to \
                      272 + 4*(N+1) bytes. Capability structures are decode only.",
        after_help = "Example:\n  mlx5vf ifc encode save_vhca_state_in vhca_id=0x1234 incremental=1 size=0x800000\n  \
                      0118000000000000800012340000000000000000000000000000000000800000"
    )]
    Encode {
        /// Structure name: the Linux struct without `mlx5_ifc_` and `_bits`
        /// (see `mlx5vf ifc list`).
        name: String,
        /// Member assignments, e.g. `vhca_id=0x1234`, `memory_key_mkey_entry.pd=5`,
        /// `klm_pas_mtt[3]=0x1000`.
        #[arg(value_name = "FIELD=VALUE")]
        assignments: Vec<String>,
        /// Print one JSON document instead: the structure and its hex.
        #[arg(long)]
        json: bool,
    },
    /// Decode hex into one FIELD=VALUE line per member (values in decimal).
    #[command(
        long_about = "Decode a structure from hex and print one FIELD=VALUE line per value \
                      member (reserved members and opaque blocks are skipped), values in \
                      decimal, in table order; then the nested structure's members with their \
                      dotted names, then tail elements klm_pas_mtt[I]=V.\n\n\
                      The length must be exactly the structure's size (for create_mkey_in: 272 \
                      bytes plus any number of 4-byte tail elements). For capability structures \
                      (cmd_hca_cap, cmd_hca_cap_2) give the capability area, i.e. \
                      query_hca_cap_out from byte 16: up to 4096 bytes, and at least enough to \
                      cover every member this tool knows.",
        after_help = "Example:\n  mlx5vf ifc decode alloc_pd_out 0x00000000000000000000002a00000000\n  \
                      status=0\n  syndrome=0\n  pd=42"
    )]
    Decode {
        /// Structure name (see `mlx5vf ifc list`).
        name: String,
        /// The bytes as hex, optionally `0x`-prefixed; ASCII whitespace inside
        /// the (single, quoted) argument is ignored. `-` reads the hex from
        /// standard input.
        hex: String,
        /// Print one JSON document instead: the members as an object, in
        /// the same order, values as numbers.
        #[arg(long)]
        json: bool,
    },
    /// List the known structures: name, size in bytes, kind.
    List {
        /// Print one JSON document instead.
        #[arg(long)]
        json: bool,
    },
    /// List a structure's members: bit offset, width (hex, as mlx5_ifc.h
    /// writes them) and name, reserved members included.
    Fields {
        /// Structure name (see `mlx5vf ifc list`).
        name: String,
        /// Print one JSON document instead (offsets and widths as numbers).
        #[arg(long)]
        json: bool,
    },
}

impl IfcCommand {
    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        match self {
            Self::Encode { json, .. }
            | Self::Decode { json, .. }
            | Self::List { json }
            | Self::Fields { json, .. } => *json,
        }
    }

    /// Its name in a JSON document.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Encode { .. } => "ifc encode",
            Self::Decode { .. } => "ifc decode",
            Self::List { .. } => "ifc list",
            Self::Fields { .. } => "ifc fields",
        }
    }
}

/// The fields of an `ifc encode` document.
#[derive(Serialize)]
struct EncodeJson<'a> {
    structure: &'a str,
    hex: String,
}

/// The fields of an `ifc decode` document: `fields` keeps decode order.
#[derive(Serialize)]
struct DecodeJson<'a> {
    structure: &'a str,
    #[serde(serialize_with = "ordered_map")]
    fields: Vec<(String, u64)>,
}

/// Pairs as a JSON object, in their order.
fn ordered_map<S: serde::Serializer>(pairs: &[(String, u64)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

/// One structure of an `ifc list` document.
#[derive(Serialize)]
struct StructureJson {
    name: &'static str,
    size: usize,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    opcode: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tail: Option<MemberJson>,
}

/// One member of an `ifc fields` document (a tail: its first element's
/// bit, element width, `name[]`).
#[derive(Serialize)]
struct MemberJson {
    name: String,
    bit: u64,
    width: u32,
}

#[derive(Serialize)]
struct ListJson {
    structures: Vec<StructureJson>,
}

#[derive(Serialize)]
struct FieldsJson {
    structure: &'static str,
    fields: Vec<MemberJson>,
}

/// Runs an `ifc` subcommand.
///
/// # Errors
/// [`IfcError`] (as [`Error::Ifc`]) or a failed write.
pub fn run(cmd: &IfcCommand, out: &mut dyn Write) -> Result<(), Error> {
    let command = cmd.name();
    match cmd {
        IfcCommand::Encode {
            name,
            assignments,
            json,
        } => {
            let bytes = encode(name, assignments)?;
            if *json {
                let body = EncodeJson {
                    structure: find(name)?.name,
                    hex: to_hex(&bytes),
                };
                json::write_line(out, &Document::new(command, body))
            } else {
                writeln!(out, "{}", to_hex(&bytes))
            }
            .map_err(Error::Output)
        }
        IfcCommand::Decode { name, hex, json } => {
            let text = if hex == "-" {
                read_stdin_hex()?
            } else {
                hex.clone()
            };
            let bytes = parse_hex(&text)?;
            let fields = decode(name, &bytes)?;
            if *json {
                let body = DecodeJson {
                    structure: find(name)?.name,
                    fields,
                };
                return json::write_line(out, &Document::new(command, body)).map_err(Error::Output);
            }
            for (member, value) in fields {
                writeln!(out, "{member}={value}").map_err(Error::Output)?;
            }
            Ok(())
        }
        IfcCommand::List { json: false } => list(out).map_err(Error::Output),
        IfcCommand::List { json: true } => {
            let body = ListJson {
                structures: LAYOUTS.iter().copied().map(structure_json).collect(),
            };
            json::write_line(out, &Document::new(command, body)).map_err(Error::Output)
        }
        IfcCommand::Fields { name, json } => {
            let layout = find(name)?;
            if *json {
                let body = FieldsJson {
                    structure: layout.name,
                    fields: all_members(layout),
                };
                json::write_line(out, &Document::new(command, body)).map_err(Error::Output)
            } else {
                fields(layout, out).map_err(Error::Output)
            }
        }
    }
}

fn structure_json(layout: &'static Layout) -> StructureJson {
    let (kind, opcode) = match layout.kind {
        LayoutKind::Input { opcode } => ("input", Some(opcode)),
        LayoutKind::Output => ("output", None),
        LayoutKind::Capability => ("capability", None),
        LayoutKind::Context => ("context", None),
    };
    StructureJson {
        name: layout.name,
        size: layout.size,
        kind,
        opcode,
        tail: layout.tail.map(|t| MemberJson {
            name: format!("{}[]", t.name),
            // CAST: a byte offset inside a structure of a few KiB.
            bit: (t.byte as u64).saturating_mul(8),
            width: t.element_bits,
        }),
    }
}

/// Why an `ifc` request failed.
#[derive(Debug)]
pub enum IfcError {
    /// No structure has this name.
    UnknownLayout(String),
    /// `encode` on a capability structure.
    DecodeOnly(&'static str),
    /// An encode argument without `=`.
    NotAnAssignment(String),
    /// The structure has no member of this name.
    UnknownField {
        /// The structure.
        layout: &'static str,
        /// The name given.
        field: String,
    },
    /// The member is reserved or an opaque block wider than 64 bits.
    NotAValue {
        /// The structure.
        layout: &'static str,
        /// The member.
        field: String,
        /// Its width in bits.
        width: u32,
        /// Whether it is a `reserved_*` member (else an opaque block).
        reserved: bool,
    },
    /// A bare name that more than one nested member has.
    AmbiguousField {
        /// The structure.
        layout: &'static str,
        /// The name given.
        field: String,
        /// The dotted names it could mean.
        candidates: Vec<String>,
    },
    /// The same member assigned twice.
    DuplicateField {
        /// The structure.
        layout: &'static str,
        /// The member (full name).
        field: String,
    },
    /// A value that is not a decimal or `0x` hex `u64`.
    BadNumber {
        /// The member it was for.
        field: String,
        /// The text given.
        text: String,
    },
    /// A value wider than its member.
    TooWide {
        /// The structure.
        layout: &'static str,
        /// The member (full name).
        field: String,
        /// Its width in bits.
        width: u32,
        /// The value given.
        value: u64,
    },
    /// A tail index that is not a number or is too large.
    BadTailIndex {
        /// The structure.
        layout: &'static str,
        /// The member name as given.
        text: String,
    },
    /// A character that is not a hex digit.
    BadHex {
        /// Its position among the hex digits (after whitespace and `0x` are
        /// removed).
        position: usize,
        /// The character.
        found: char,
    },
    /// An odd number of hex digits.
    OddLength {
        /// Digits given.
        digits: usize,
    },
    /// The bytes do not have the structure's length.
    WrongLength {
        /// The structure.
        layout: &'static Layout,
        /// Bytes given.
        actual: usize,
    },
    /// A member this tool cannot address (a nested structure at an offset
    /// that breaks the dword rules); a layout-table problem, not user error.
    Unaddressable {
        /// The structure.
        layout: &'static str,
        /// The member.
        field: String,
    },
    /// Reading hex from standard input failed.
    ReadInput(io::Error),
}

impl IfcError {
    /// [`EXIT_USAGE`], except for a failed read of standard input.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::ReadInput(_) => EXIT_FAILURE,
            _ => EXIT_USAGE,
        }
    }
}

impl fmt::Display for IfcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownLayout(name) => write!(
                f,
                "unknown structure {name:?} (`mlx5vf ifc list` shows the known ones)"
            ),
            Self::DecodeOnly(name) => write!(
                f,
                "{name} is a capability structure and is decode only; encode is not supported"
            ),
            Self::NotAnAssignment(arg) => write!(f, "expected FIELD=VALUE, got {arg:?}"),
            Self::UnknownField { layout, field } => write!(
                f,
                "{layout} has no field {field:?} (`mlx5vf ifc fields {layout}` lists them)"
            ),
            Self::NotAValue {
                layout,
                field,
                width,
                reserved: true,
            } => write!(
                f,
                "field {field:?} of {layout} is reserved ({width} bits) and cannot be set"
            ),
            Self::NotAValue {
                layout,
                field,
                width,
                reserved: false,
            } => write!(
                f,
                "field {field:?} of {layout} is a {width}-bit block, not a value; \
                 set its members as {field}.MEMBER"
            ),
            Self::AmbiguousField {
                layout,
                field,
                candidates,
            } => write!(
                f,
                "field {field:?} of {layout} is ambiguous: {}",
                candidates.join(" or ")
            ),
            Self::DuplicateField { layout, field } => {
                write!(f, "field {field:?} of {layout} is given twice")
            }
            Self::BadNumber { field, text } => write!(
                f,
                "bad number {text:?} for field {field:?} (expected decimal or 0x hex, up to 64 bits)"
            ),
            Self::TooWide {
                layout,
                field,
                width,
                value,
            } => write!(
                f,
                "field {field:?} of {layout} is {width} bits; {value:#x} does not fit"
            ),
            Self::BadTailIndex { layout, text } => write!(
                f,
                "bad tail element {text:?} of {layout} (expected NAME[N] with N below {MAX_TAIL_ELEMENTS})"
            ),
            Self::BadHex { position, found } => {
                write!(f, "bad hex digit {found:?} at digit {position}")
            }
            Self::OddLength { digits } => {
                write!(
                    f,
                    "odd number of hex digits ({digits}); bytes need two each"
                )
            }
            Self::WrongLength { layout, actual } => match (layout.kind, layout.tail) {
                (LayoutKind::Capability, _) => write!(
                    f,
                    "{} takes {} to {} bytes of the capability area; got {actual}",
                    layout.name,
                    layout.min_decode_len(),
                    layout.size
                ),
                (_, Some(tail)) => write!(
                    f,
                    "{} is {} bytes plus {}-byte {} elements; got {actual}",
                    layout.name,
                    layout.size,
                    tail.element_bits / 8,
                    tail.name
                ),
                (_, None) => write!(f, "{} is {} bytes; got {actual}", layout.name, layout.size),
            },
            Self::Unaddressable { layout, field } => {
                write!(f, "member {field:?} of {layout} cannot be addressed")
            }
            Self::ReadInput(e) => write!(f, "reading hex from standard input: {e}"),
        }
    }
}

impl std::error::Error for IfcError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::ReadInput(e) => Some(e),
            _ => None,
        }
    }
}

/// Looks a structure up by name.
///
/// # Errors
/// [`IfcError::UnknownLayout`].
pub fn find(name: &str) -> Result<&'static Layout, IfcError> {
    layout_by_name(name).ok_or_else(|| IfcError::UnknownLayout(name.to_owned()))
}

/// A value member with its full name and its position in the outer
/// structure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// `vhca_id`, or `memory_key_mkey_entry.pd` for a nested member.
    pub name: String,
    /// The member's bits, relative to the start of the outer structure.
    pub field: Field,
}

/// The value members of `layout` ([`Field::is_value`]), in decode order:
/// the outer table, then each nested structure's table with dotted names.
///
/// # Errors
/// [`IfcError::Unaddressable`] if a nested structure sits where its members
/// would break the dword rules (no layout in the table does).
pub fn members(layout: &'static Layout) -> Result<Vec<Member>, IfcError> {
    let mut all: Vec<Member> = layout
        .fields
        .iter()
        .filter(|f| f.is_value())
        .map(|f| Member {
            name: f.name.to_owned(),
            field: *f,
        })
        .collect();
    for nested in layout.nested {
        for inner in nested.layout.fields.iter().filter(|f| f.is_value()) {
            let name = format!("{}.{}", nested.name, inner.name);
            let field = nested
                .bit
                .checked_add(inner.bit)
                .map(|bit| Field { bit, ..*inner })
                .filter(Field::is_well_formed)
                .ok_or_else(|| IfcError::Unaddressable {
                    layout: layout.name,
                    field: name.clone(),
                })?;
            all.push(Member { name, field });
        }
    }
    Ok(all)
}

/// What an encode argument names.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Member(Member),
    Tail { name: &'static str, index: usize },
}

impl Target {
    fn full_name(&self) -> String {
        match self {
            Self::Member(m) => m.name.clone(),
            Self::Tail { name, index } => format!("{name}[{index}]"),
        }
    }
}

/// Resolves a member name of `layout` for encoding.
fn resolve(layout: &'static Layout, all: &[Member], name: &str) -> Result<Target, IfcError> {
    if let Some(m) = all.iter().find(|m| m.name == name) {
        return Ok(Target::Member(m.clone()));
    }
    if let Some(tail) = layout.tail {
        if let Some(rest) = name.strip_prefix(tail.name).filter(|r| r.starts_with('[')) {
            let bad = || IfcError::BadTailIndex {
                layout: layout.name,
                text: name.to_owned(),
            };
            let index = rest
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<usize>().ok())
                .filter(|&i| i < MAX_TAIL_ELEMENTS)
                .ok_or_else(bad)?;
            return Ok(Target::Tail {
                name: tail.name,
                index,
            });
        }
    }
    // A bare nested name, if exactly one nested member has it (outer names
    // matched above, so they always win).
    let candidates: Vec<&Member> = all
        .iter()
        .filter(|m| {
            m.name
                .split_once('.')
                .is_some_and(|(_, inner)| inner == name)
        })
        .collect();
    match candidates.as_slice() {
        [one] => return Ok(Target::Member((*one).clone())),
        [] => {}
        many => {
            return Err(IfcError::AmbiguousField {
                layout: layout.name,
                field: name.to_owned(),
                candidates: many.iter().map(|m| m.name.clone()).collect(),
            });
        }
    }
    // Not a value: say why, if it is a member at all.
    let non_value = layout.fields.iter().find(|f| f.name == name).or_else(|| {
        let (outer, inner) = name.split_once('.')?;
        let nested = layout.nested.iter().find(|n| n.name == outer)?;
        nested.layout.fields.iter().find(|f| f.name == inner)
    });
    Err(match non_value {
        Some(f) => IfcError::NotAValue {
            layout: layout.name,
            field: name.to_owned(),
            width: f.width,
            reserved: f.is_reserved(),
        },
        None => IfcError::UnknownField {
            layout: layout.name,
            field: name.to_owned(),
        },
    })
}

/// Encodes `layout` from `FIELD=VALUE` assignments (see the module
/// documentation).
///
/// # Errors
/// Unknown structure or member, decode-only structure, bad or too-wide value,
/// a member given twice.
pub fn encode<S: AsRef<str>>(name: &str, assignments: &[S]) -> Result<Vec<u8>, IfcError> {
    let layout = find(name)?;
    if layout.kind == LayoutKind::Capability {
        return Err(IfcError::DecodeOnly(layout.name));
    }
    let all = members(layout)?;
    let mut sets: Vec<(Target, u64)> = Vec::with_capacity(assignments.len());
    for arg in assignments {
        let arg = arg.as_ref();
        let (field, text) = arg
            .split_once('=')
            .ok_or_else(|| IfcError::NotAnAssignment(arg.to_owned()))?;
        let target = resolve(layout, &all, field)?;
        if sets.iter().any(|(t, _)| *t == target) {
            return Err(IfcError::DuplicateField {
                layout: layout.name,
                field: target.full_name(),
            });
        }
        let value = parse_u64(text).ok_or_else(|| IfcError::BadNumber {
            field: target.full_name(),
            text: text.to_owned(),
        })?;
        let width = match &target {
            Target::Member(m) => m.field.width,
            Target::Tail { .. } => tail_bits(layout),
        };
        let fits = width >= 64 || value >> width == 0;
        if !fits {
            return Err(IfcError::TooWide {
                layout: layout.name,
                field: target.full_name(),
                width,
                value,
            });
        }
        sets.push((target, value));
    }
    let tail_len = sets
        .iter()
        .filter_map(|(t, _)| match t {
            // index < MAX_TAIL_ELEMENTS (2^21): no overflow.
            Target::Tail { index, .. } => Some((index + 1) * tail_bytes(layout)),
            Target::Member(_) => None,
        })
        .max()
        .unwrap_or(0);
    let mut buf = vec![0u8; layout.size + tail_len];
    if let LayoutKind::Input { opcode } = layout.kind {
        let given = sets
            .iter()
            .any(|(t, _)| matches!(t, Target::Member(m) if m.name == "opcode"));
        if let (false, Some(field)) = (given, layout.fields.iter().find(|f| f.name == "opcode")) {
            write_field(layout, &mut buf, *field, u64::from(opcode))?;
        }
    }
    for (target, value) in sets {
        let field = match target {
            Target::Member(m) => m.field,
            Target::Tail { name, index } => tail_field(layout, name, index)?,
        };
        write_field(layout, &mut buf, field, value)?;
    }
    Ok(buf)
}

/// The 32-bit field of tail element `index`.
fn tail_field(layout: &Layout, name: &'static str, index: usize) -> Result<Field, IfcError> {
    let unaddressable = || IfcError::Unaddressable {
        layout: layout.name,
        field: format!("{name}[{index}]"),
    };
    let byte = layout
        .tail
        .map(|t| t.byte)
        .and_then(|start| index.checked_mul(tail_bytes(layout))?.checked_add(start))
        .ok_or_else(unaddressable)?;
    let bit = byte
        .checked_mul(8)
        .and_then(|b| u32::try_from(b).ok())
        .ok_or_else(unaddressable)?;
    Ok(Field {
        name,
        bit,
        width: tail_bits(layout),
    })
}

fn write_field(layout: &Layout, buf: &mut [u8], field: Field, value: u64) -> Result<(), IfcError> {
    // The buffer covers every member and the widths were checked, so this
    // cannot fail; if it did, the message names the member.
    field
        .write(buf, value)
        .map_err(|_| IfcError::Unaddressable {
            layout: layout.name,
            field: field.name.to_owned(),
        })
}

/// Whether `len` bytes are a valid encoding of `layout` for decoding.
fn length_ok(layout: &Layout, len: usize) -> bool {
    match (layout.kind, layout.tail) {
        (LayoutKind::Capability, _) => (layout.min_decode_len()..=layout.size).contains(&len),
        (_, Some(_)) => len >= layout.size && (len - layout.size) % tail_bytes(layout) == 0,
        (_, None) => len == layout.size,
    }
}

/// Decodes `bytes` as `layout`: every value member in order, then the tail
/// elements, as `(name, value)` pairs.
///
/// # Errors
/// Unknown structure, or a length that is not the structure's.
pub fn decode(name: &str, bytes: &[u8]) -> Result<Vec<(String, u64)>, IfcError> {
    let layout = find(name)?;
    if !length_ok(layout, bytes.len()) {
        return Err(IfcError::WrongLength {
            layout,
            actual: bytes.len(),
        });
    }
    let mut values = Vec::new();
    for m in members(layout)? {
        let value = m.field.read(bytes).map_err(|_| IfcError::Unaddressable {
            layout: layout.name,
            field: m.name.clone(),
        })?;
        values.push((m.name, value));
    }
    if let Some(tail) = layout.tail {
        let count = bytes.len().saturating_sub(layout.size) / tail_bytes(layout);
        for index in 0..count {
            let value = tail_field(layout, tail.name, index)?
                .read(bytes)
                .map_err(|_| IfcError::Unaddressable {
                    layout: layout.name,
                    field: format!("{}[{index}]", tail.name),
                })?;
            values.push((format!("{}[{index}]", tail.name), value));
        }
    }
    Ok(values)
}

/// Parses hex: an optional `0x` prefix, ASCII whitespace anywhere ignored,
/// two digits per byte, either case.
///
/// # Errors
/// [`IfcError::BadHex`] or [`IfcError::OddLength`].
pub fn parse_hex(text: &str) -> Result<Vec<u8>, IfcError> {
    let digits: Vec<char> = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let digits = match digits.as_slice() {
        ['0', 'x' | 'X', rest @ ..] => rest,
        all => all,
    };
    let mut nibbles = Vec::with_capacity(digits.len());
    for (position, &found) in digits.iter().enumerate() {
        let nibble = found
            .to_digit(16)
            .ok_or(IfcError::BadHex { position, found })?;
        // to_digit(16) is below 16, so the conversion never fails.
        nibbles.push(u8::try_from(nibble).unwrap_or(0));
    }
    if nibbles.len() % 2 != 0 {
        return Err(IfcError::OddLength {
            digits: nibbles.len(),
        });
    }
    Ok(nibbles
        .chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => hi << 4 | lo,
            _ => 0,
        })
        .collect())
}

/// Lowercase hex, no separators.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn read_stdin_hex() -> Result<String, IfcError> {
    let mut text = String::new();
    io::stdin()
        .lock()
        .take(MAX_HEX_INPUT)
        .read_to_string(&mut text)
        .map_err(IfcError::ReadInput)?;
    Ok(text)
}

/// A structure's kind as `list` prints it.
fn kind_text(layout: &Layout) -> String {
    let mut s = match layout.kind {
        LayoutKind::Input { opcode } => format!("input opcode={opcode:#x}"),
        LayoutKind::Output => "output".to_owned(),
        LayoutKind::Capability => "capability (decode only)".to_owned(),
        LayoutKind::Context => "context".to_owned(),
    };
    if let Some(tail) = layout.tail {
        let _ = write!(
            s,
            ", then {}[] of {}-bit elements",
            tail.name, tail.element_bits
        );
    }
    s
}

/// `mlx5vf ifc list`.
fn list(out: &mut dyn Write) -> io::Result<()> {
    let width = LAYOUTS.iter().map(|l| l.name.len()).max().unwrap_or(0);
    for layout in LAYOUTS {
        writeln!(
            out,
            "{:<width$}  {:>5}  {}",
            layout.name,
            layout.size,
            kind_text(layout)
        )?;
    }
    Ok(())
}

/// Every member of `layout` with its bit offset and width in the outer
/// structure, reserved ones included: the outer table, each nested
/// structure's with dotted names, then the tail as `name[]`.
fn all_members(layout: &'static Layout) -> Vec<MemberJson> {
    let mut all: Vec<MemberJson> = layout
        .fields
        .iter()
        .map(|f| MemberJson {
            name: f.name.to_owned(),
            bit: u64::from(f.bit),
            width: f.width,
        })
        .collect();
    for nested in layout.nested {
        for f in nested.layout.fields {
            all.push(MemberJson {
                name: format!("{}.{}", nested.name, f.name),
                bit: u64::from(nested.bit) + u64::from(f.bit),
                width: f.width,
            });
        }
    }
    if let Some(tail) = layout.tail {
        all.push(MemberJson {
            name: format!("{}[]", tail.name),
            // CAST: a byte offset inside a structure of a few KiB.
            bit: (tail.byte as u64).saturating_mul(8),
            width: tail.element_bits,
        });
    }
    all
}

/// `mlx5vf ifc fields NAME`: every member with its bit offset and width in
/// the outer structure.
fn fields(layout: &'static Layout, out: &mut dyn Write) -> io::Result<()> {
    for m in all_members(layout) {
        writeln!(out, "{:#06x} {:#06x} {}", m.bit, m.width, m.name)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlx5vf_core::ifc::Nested;

    /// A deterministic PRNG (splitmix64).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn value(&mut self, width: u32) -> u64 {
            let v = self.next();
            if width >= 64 {
                v
            } else {
                v & ((1 << width) - 1)
            }
        }
    }

    fn enc(name: &str, args: &[&str]) -> Result<String, IfcError> {
        encode(name, args).map(|b| to_hex(&b))
    }

    #[test]
    fn golden_save_vhca_state_in() {
        assert_eq!(
            enc(
                "save_vhca_state_in",
                &["vhca_id=0x1234", "incremental=1", "size=0x800000"]
            )
            .unwrap(),
            "0118000000000000800012340000000000000000000000000000000000800000"
        );
    }

    #[test]
    fn every_value_member_round_trips_in_process() {
        let mut rng = Rng(0x6d76_0001);
        for layout in LAYOUTS {
            let all = members(layout).unwrap();
            for _ in 0..64 {
                let values: Vec<(String, u64)> = all
                    .iter()
                    .map(|m| (m.name.clone(), rng.value(m.field.width)))
                    .collect();
                let bytes = if layout.kind == LayoutKind::Capability {
                    let mut buf = vec![0u8; layout.size];
                    for (m, (_, v)) in all.iter().zip(&values) {
                        m.field.write(&mut buf, *v).unwrap();
                    }
                    buf
                } else {
                    let args: Vec<String> =
                        values.iter().map(|(n, v)| format!("{n}={v}")).collect();
                    encode(layout.name, &args).unwrap()
                };
                assert_eq!(
                    decode(layout.name, &bytes).unwrap(),
                    values,
                    "{}",
                    layout.name
                );
            }
        }
    }

    #[test]
    fn opcode_defaults_and_can_be_overridden() {
        assert_eq!(
            enc("alloc_pd_in", &[]).unwrap(),
            format!("0800{}", "0".repeat(28))
        );
        assert_eq!(enc("alloc_pd_in", &["opcode=0"]).unwrap(), "0".repeat(32));
        // Outputs have no default opcode.
        assert_eq!(enc("alloc_pd_out", &[]).unwrap(), "0".repeat(32));
    }

    #[test]
    fn nested_and_bare_names_are_the_same_member() {
        let dotted = encode("create_mkey_in", &["memory_key_mkey_entry.pd=5"]).unwrap();
        let bare = encode("create_mkey_in", &["pd=5"]).unwrap();
        assert_eq!(dotted, bare);
        assert_eq!(dotted.len(), 272);
        // mkc.pd: bit 0x68 of the mkc, dword 3 of the mkc at byte 16.
        assert_eq!(&dotted[28..32], &[0, 0, 0, 5]);
        assert!(matches!(
            encode("create_mkey_in", &["pd=5", "memory_key_mkey_entry.pd=6"]),
            Err(IfcError::DuplicateField { .. })
        ));
    }

    #[test]
    fn tail_elements_extend_the_output() {
        let bytes = encode("create_mkey_in", &["klm_pas_mtt[2]=0xdeadbeef"]).unwrap();
        assert_eq!(bytes.len(), 272 + 12);
        assert_eq!(&bytes[280..284], &[0xde, 0xad, 0xbe, 0xef]);
        let decoded = decode("create_mkey_in", &bytes).unwrap();
        let tail: Vec<_> = decoded
            .iter()
            .filter(|(n, _)| n.starts_with("klm_pas_mtt["))
            .collect();
        assert_eq!(tail.len(), 3);
        assert_eq!(tail[2], &("klm_pas_mtt[2]".to_owned(), 0xdead_beef));
        for bad in [
            "klm_pas_mtt[]=1",
            "klm_pas_mtt[x]=1",
            "klm_pas_mtt[1=1",
            "klm_pas_mtt[+1]=1",
            "klm_pas_mtt[2097152]=1",
        ] {
            assert!(
                matches!(
                    encode("create_mkey_in", &[bad]),
                    Err(IfcError::BadTailIndex { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            encode("create_mkey_in", &["klm_pas_mtt[0]=0x100000000"]),
            Err(IfcError::TooWide { width: 32, .. })
        ));
    }

    #[test]
    fn errors_name_the_problem() {
        let msg = |r: Result<String, IfcError>| r.unwrap_err().to_string();
        assert_eq!(
            msg(enc("save_vhca_state_in", &["size=0x100000000"])),
            "field \"size\" of save_vhca_state_in is 32 bits; 0x100000000 does not fit"
        );
        assert!(msg(enc("nope", &[])).contains("unknown structure \"nope\""));
        assert!(msg(enc("cmd_hca_cap", &[])).contains("decode only"));
        assert!(msg(enc("save_vhca_state_in", &["bogus=1"])).contains("no field \"bogus\""));
        assert!(msg(enc("save_vhca_state_in", &["size"])).contains("expected FIELD=VALUE"));
        assert!(msg(enc("save_vhca_state_in", &["size=12z"])).contains("bad number \"12z\""));
        assert!(msg(enc("save_vhca_state_in", &["reserved_at_20=1"])).contains("reserved"));
        assert!(
            msg(enc("create_mkey_in", &["memory_key_mkey_entry=1"]))
                .contains("memory_key_mkey_entry.MEMBER")
        );
        assert!(
            msg(enc(
                "create_mkey_in",
                &["memory_key_mkey_entry.reserved_at_40=1"]
            ))
            .contains("reserved")
        );
        assert!(matches!(
            parse_hex("0x0g"),
            Err(IfcError::BadHex {
                position: 1,
                found: 'g'
            })
        ));
        assert!(matches!(
            parse_hex("abc"),
            Err(IfcError::OddLength { digits: 3 })
        ));
        assert!(
            msg(decode("alloc_pd_out", &[0; 15]).map(|_| String::new()))
                .contains("alloc_pd_out is 16 bytes; got 15")
        );
    }

    /// A structure with the same context nested twice, so bare inner names
    /// are ambiguous (no real layout has that today).
    static TWICE: Layout = Layout {
        name: "twice_in",
        size: 144,
        kind: LayoutKind::Context,
        fields: &[
            Field {
                name: "pd",
                bit: 0,
                width: 32,
            },
            Field {
                name: "first",
                bit: 0x20,
                width: 0x200,
            },
            Field {
                name: "second",
                bit: 0x220,
                width: 0x200,
            },
            Field {
                name: "reserved_at_420",
                bit: 0x420,
                width: 0x60,
            },
        ],
        nested: &[
            Nested {
                name: "first",
                bit: 0x20,
                layout: &mlx5vf_core::ifc::mkey::mkc::LAYOUT,
            },
            Nested {
                name: "second",
                bit: 0x220,
                layout: &mlx5vf_core::ifc::mkey::mkc::LAYOUT,
            },
        ],
        tail: None,
    };

    #[test]
    fn bare_names_resolve_only_when_unambiguous() {
        let all = members(&TWICE).unwrap();
        // An outer member always wins over a nested one of the same name.
        assert!(matches!(
            resolve(&TWICE, &all, "pd"),
            Ok(Target::Member(Member { ref name, .. })) if name == "pd"
        ));
        assert!(matches!(
            resolve(&TWICE, &all, "second.pd"),
            Ok(Target::Member(Member {
                field: Field { bit: 0x288, .. },
                ..
            }))
        ));
        let err = resolve(&TWICE, &all, "qpn").unwrap_err();
        assert_eq!(
            err.to_string(),
            "field \"qpn\" of twice_in is ambiguous: first.qpn or second.qpn"
        );
    }

    #[test]
    fn hex_parsing() {
        assert_eq!(parse_hex("").unwrap(), Vec::<u8>::new());
        assert_eq!(parse_hex("0x").unwrap(), Vec::<u8>::new());
        assert_eq!(parse_hex(" 0X aB\n12\t").unwrap(), vec![0xab, 0x12]);
        assert_eq!(to_hex(&[0, 0xab, 0x7f]), "00ab7f");
    }

    #[test]
    fn capability_lengths() {
        let cap = find("cmd_hca_cap").unwrap();
        let min = cap.min_decode_len();
        assert!(decode("cmd_hca_cap", &vec![0; min]).is_ok());
        assert!(decode("cmd_hca_cap", &vec![0; 4096]).is_ok());
        assert!(decode("cmd_hca_cap", &vec![0; min - 1]).is_err());
        assert!(decode("cmd_hca_cap", &vec![0; 4097]).is_err());
    }

    #[test]
    fn create_mkey_tail_lengths() {
        assert!(decode("create_mkey_in", &[0; 272]).is_ok());
        assert!(decode("create_mkey_in", &[0; 276]).is_ok());
        assert!(decode("create_mkey_in", &[0; 274]).is_err());
        assert!(decode("create_mkey_in", &[0; 271]).is_err());
    }
}
