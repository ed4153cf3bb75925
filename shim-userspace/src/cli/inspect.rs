//! `mlx5vf inspect`: list the records of a migration stream.
//!
//! The stream is read in [`READ_CHUNK`]-byte pieces through
//! [`mlx5vf_core::stream::Reader::feed`], the same reader the resume engine
//! uses, so memory stays at one chunk however large the stream is (streams of
//! many GiB are normal) and what this tool accepts is exactly what a load
//! accepts. One line per complete record, then a summary; a malformed stream
//! gets the records parsed so far and then an error naming what is wrong and
//! at which byte.

use std::cell::RefCell;
use std::fmt;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use clap::Args;
use mlx5vf_core::stream::{
    HEADER_LEN, Header, Reader, StreamEnd, StreamError, StreamInfo, Tag, Verdict,
};
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::{Error, json};
use crate::recognise::{Opening, describe_start};

/// Bytes read from the input at a time (what QEMU reads from a data fd).
pub const READ_CHUNK: usize = 1 << 20;

/// The long help of `mlx5vf inspect`.
pub const LONG_ABOUT: &str = "List the records of a migration stream, one line each: stream offset, tag, \
                  flags (mandatory/optional), payload size and, for the small records, their \
                  content (STOP_COPY_SIZE value; mlx5vf stream-info and stream-end fields). Then \
                  a summary: records, FW_DATA records and bytes, total bytes, and integrity: \
                  `verified` when the stream carries an mlx5vf end record that matched (record \
                  count, byte count and CRC-32C of the FW_DATA payloads), `absent` for a stream \
                  in the Linux format, which has none.\n\n\
                  An mlx5 stream is recognised by its first record header: a STOP_COPY_SIZE \
                  record (optional, 8 bytes), a FW_DATA record (mandatory, 1 byte to 4 GiB - 1) \
                  or an mlx5vf stream-info record (optional, 64 bytes). Anything else, an empty \
                  file included, is not an mlx5 migration stream (other VFIO drivers write their \
                  own formats): inspect says so, with what the first bytes look like, and exits \
                  1.\n\n\
                  The stream is read in 1 MiB pieces and never held in memory. A malformed \
                  stream (truncated header or payload, a record over 4 GiB - 1, an unknown \
                  mandatory tag, an integrity mismatch, a missing end record after a \
                  stream-info record, ...) prints the records parsed so far, then one error \
                  line on standard error with the byte offset, and exits 1.";

/// The examples after the help of `mlx5vf inspect`.
pub const AFTER_HELP: &str = "Example:\n  mlx5vf inspect state.bin\n  \
                  offset=0 tag=STOP_COPY_SIZE flags=optional size=8 stop_copy_size=8388608\n  \
                  offset=24 tag=FW_DATA flags=mandatory size=8388608\n  \
                  summary records=2 fw_data_records=1 fw_data_bytes=8388608 total_bytes=8388632 integrity=absent";

/// `mlx5vf inspect` arguments.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The stream file; `-` (the default) reads standard input.
    #[arg(value_name = "FILE|-", default_value = "-")]
    pub file: PathBuf,
    /// Print one JSON document instead, written as the stream is read:
    /// "records" (one object per record), then "summary", or "error" for a
    /// malformed stream (also reported on standard error).
    #[arg(long)]
    pub json: bool,
}

/// How to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// One JSON document instead of text.
    pub json: bool,
    /// Read size in bytes (at least 1).
    pub chunk: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            json: false,
            chunk: READ_CHUNK,
        }
    }
}

/// What a whole, well-formed stream held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Records of any tag.
    pub records: u64,
    /// FW_DATA records.
    pub fw_data_records: u64,
    /// FW_DATA payload bytes.
    pub fw_data_bytes: u64,
    /// Stream bytes.
    pub total_bytes: u64,
    /// The mlx5vf end record was present and matched (else the stream is in
    /// the Linux format, without one).
    pub verified: bool,
}

/// Why `inspect` failed.
#[derive(Debug)]
pub enum InspectError {
    /// The file could not be opened.
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Reading the stream failed.
    Read(io::Error),
    /// Writing the listing failed.
    Output(io::Error),
    /// The reader rejected the stream (oversized record, unknown mandatory
    /// tag, integrity mismatch, …).
    Malformed(StreamError),
    /// The stream stops inside a record header.
    TruncatedHeader {
        /// Stream offset of the header.
        offset: u64,
        /// Header bytes present.
        have: u64,
        /// Header bytes missing.
        missing: u64,
    },
    /// The stream stops inside a record's payload.
    TruncatedRecord {
        /// Stream offset of the record's header.
        offset: u64,
        /// Its tag.
        tag: Tag,
        /// Its payload size.
        size: u64,
        /// Payload bytes missing.
        missing: u64,
    },
    /// The stream began with stream-info but ended, on a record boundary,
    /// without the stream-end record.
    MissingEnd {
        /// Where the stream ended.
        offset: u64,
        /// Records it held.
        records: u64,
    },
    /// The input is not an mlx5 migration stream (see
    /// [`crate::recognise`]): empty, or its first bytes open no record.
    NotAStream {
        /// The first bytes, in words.
        start: String,
    },
    /// The reader consumed nothing from non-empty input (a reader bug;
    /// reported instead of looping forever).
    Stalled {
        /// Stream offset.
        offset: u64,
    },
}

impl InspectError {
    /// The stream offset the error is about, if it is about the stream.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Self::Malformed(e) => Some(e.offset),
            Self::TruncatedHeader { offset, .. }
            | Self::TruncatedRecord { offset, .. }
            | Self::MissingEnd { offset, .. }
            | Self::Stalled { offset } => Some(*offset),
            Self::NotAStream { .. } => Some(0),
            Self::Open { .. } | Self::Read(_) | Self::Output(_) => None,
        }
    }

    /// Whether the error happened while the stream was listed (so a JSON
    /// listing ends with it), rather than before (the file did not open)
    /// or in writing the listing.
    pub fn is_in_listing(&self) -> bool {
        !matches!(self, Self::Open { .. } | Self::Output(_))
    }
}

impl fmt::Display for InspectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open { path, source } => write!(f, "cannot open {}: {source}", path.display()),
            Self::Read(e) => write!(f, "reading the stream: {e}"),
            Self::Output(e) => write!(f, "writing output: {e}"),
            Self::Malformed(e) => write!(f, "bad record at byte {}: {}", e.offset, e.kind),
            Self::TruncatedHeader {
                offset,
                have,
                missing,
            } => write!(
                f,
                "truncated stream: record header at byte {offset} has {have} of \
                 {HEADER_LEN} bytes ({missing} missing)"
            ),
            Self::TruncatedRecord {
                offset,
                tag,
                size,
                missing,
            } => write!(
                f,
                "truncated stream: {tag} record at byte {offset} has {} of its {size} \
                 payload bytes ({missing} missing)",
                size.saturating_sub(*missing)
            ),
            Self::MissingEnd { offset, records } => write!(
                f,
                "stream-end record missing: the stream starts with a stream-info record \
                 but ends at byte {offset} after {records} records without one"
            ),
            Self::NotAStream { start } => write!(
                f,
                "not an mlx5 migration stream: it starts with {start} (an mlx5 stream opens \
                 with a STOP_COPY_SIZE, FW_DATA or mlx5vf stream-info record)"
            ),
            Self::Stalled { offset } => {
                write!(f, "stream reader made no progress at byte {offset}")
            }
        }
    }
}

impl std::error::Error for InspectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Open { source: e, .. } | Self::Read(e) | Self::Output(e) => Some(e),
            Self::Malformed(e) => Some(e),
            _ => None,
        }
    }
}

/// Runs `mlx5vf inspect`.
///
/// # Errors
/// [`InspectError`] (as [`Error::Inspect`]) or a failed write.
pub fn run(args: &InspectArgs, out: &mut dyn Write) -> Result<(), Error> {
    let opts = Options {
        json: args.json,
        ..Options::default()
    };
    if args.file.as_os_str() == "-" {
        inspect(&mut io::stdin().lock(), out, &opts)?;
    } else {
        let mut file = File::open(&args.file).map_err(|source| InspectError::Open {
            path: args.file.clone(),
            source,
        })?;
        inspect(&mut file, out, &opts)?;
    }
    Ok(())
}

/// Lists the records of the stream `input` on `out` and returns the summary
/// (also printed). On a malformed stream the records before the fault are
/// printed (and, with JSON, the error in the document), then the error is
/// returned.
///
/// # Errors
/// See [`InspectError`].
pub fn inspect(
    input: &mut dyn Read,
    out: &mut dyn Write,
    opts: &Options,
) -> Result<Summary, InspectError> {
    if opts.json {
        return inspect_json(input, out, opts.chunk);
    }
    let summary = walk(input, opts.chunk, &mut |record| {
        writeln!(out, "{}", record_line(record))
    })?;
    writeln!(out, "{}", summary_line(&summary)).map_err(InspectError::Output)?;
    Ok(summary)
}

/// The listing as one JSON document, written while the stream is read (a
/// stream of many GiB holds many records; none is kept):
/// `{"schema", "command", "records": [...], "summary" | "error"}`.
fn inspect_json(
    input: &mut dyn Read,
    out: &mut dyn Write,
    chunk: usize,
) -> Result<Summary, InspectError> {
    let listing = Listing {
        input: RefCell::new(input),
        chunk,
        outcome: RefCell::new(None),
    };
    let written = serde_json::to_writer(&mut *out, &listing)
        .map_err(io::Error::from)
        .and_then(|()| writeln!(out));
    let outcome = listing.outcome.into_inner();
    written.map_err(InspectError::Output)?;
    outcome.unwrap_or(Err(InspectError::Stalled { offset: 0 }))
}

/// The JSON document of a listing. Serializing it reads the stream:
/// `records` walks it, leaving the outcome for the `summary` or `error`
/// field that follows (serde writes fields in order).
struct Listing<'a> {
    input: RefCell<&'a mut dyn Read>,
    chunk: usize,
    outcome: RefCell<Option<Result<Summary, InspectError>>>,
}

/// The `records` array of a [`Listing`].
struct Records<'l, 'a>(&'l Listing<'a>);

impl Serialize for Listing<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("schema", json::SCHEMA)?;
        map.serialize_entry("command", "inspect")?;
        map.serialize_entry("records", &Records(self))?;
        match &*self.outcome.borrow() {
            Some(Ok(summary)) => map.serialize_entry("summary", &SummaryJson::from(summary))?,
            Some(Err(e)) => map.serialize_entry("error", &ErrorJson::from(e))?,
            None => return Err(S::Error::custom("the stream was not read")),
        }
        map.end()
    }
}

impl Serialize for Records<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let listing = self.0;
        let mut seq = serializer.serialize_seq(None)?;
        // The serializer's own error (a failed write), kept to return as
        // itself; the walk sees only that the listing stopped.
        let mut write_error = None;
        let outcome = walk(
            &mut **listing.input.borrow_mut(),
            listing.chunk,
            &mut |record| {
                seq.serialize_element(&RecordJson::from(record))
                    .map_err(|e| {
                        write_error = Some(e);
                        io::Error::other("writing the listing")
                    })
            },
        );
        if let Some(e) = write_error {
            return Err(e);
        }
        *listing.outcome.borrow_mut() = Some(outcome);
        seq.end()
    }
}

/// A record in a JSON listing.
#[derive(Serialize)]
struct RecordJson {
    offset: u64,
    tag: String,
    tag_value: u32,
    flags: String,
    flags_value: u32,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_copy_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_info: Option<StreamInfoJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_end: Option<StreamEndJson>,
}

#[derive(Serialize)]
struct StreamInfoJson {
    version: u16,
    producer: String,
    chunk_mode: bool,
    pre_copy: bool,
    page_size: u32,
    chunk_size: u64,
    chunk_slots: u32,
}

#[derive(Serialize)]
struct StreamEndJson {
    fw_data_records: u64,
    fw_data_bytes: u64,
    /// As `0x` and eight hex digits, as the text listing shows it.
    crc32c: String,
}

impl From<&Record> for RecordJson {
    fn from(r: &Record) -> Self {
        let mut json = Self {
            offset: r.offset,
            tag: tag_text(r.header.tag),
            tag_value: u32::from(r.header.tag),
            flags: flags_text(&r.header),
            flags_value: r.header.flags.into_bits(),
            size: r.header.record_size,
            stop_copy_size: None,
            stream_info: None,
            stream_end: None,
        };
        match r.content {
            Some(Content::StopCopySize(v)) => json.stop_copy_size = Some(v),
            Some(Content::Info(i)) => {
                json.stream_info = Some(StreamInfoJson {
                    version: i.version,
                    producer: i.producer_str().to_owned(),
                    chunk_mode: i.flags.chunk_mode(),
                    pre_copy: i.flags.pre_copy(),
                    page_size: i.page_size,
                    chunk_size: i.chunk_size,
                    chunk_slots: i.chunk_slots,
                });
            }
            Some(Content::End(e)) => {
                json.stream_end = Some(StreamEndJson {
                    fw_data_records: e.fw_data_records,
                    fw_data_bytes: e.fw_data_bytes,
                    crc32c: format!("{:#010x}", e.crc32c),
                });
            }
            None => {}
        }
        json
    }
}

/// The `summary` of a JSON listing.
#[derive(Serialize)]
struct SummaryJson {
    records: u64,
    fw_data_records: u64,
    fw_data_bytes: u64,
    total_bytes: u64,
    integrity: &'static str,
}

impl From<&Summary> for SummaryJson {
    fn from(s: &Summary) -> Self {
        Self {
            records: s.records,
            fw_data_records: s.fw_data_records,
            fw_data_bytes: s.fw_data_bytes,
            total_bytes: s.total_bytes,
            integrity: integrity_text(s),
        }
    }
}

/// The `error` of a JSON listing.
#[derive(Serialize)]
struct ErrorJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    message: String,
    exit_code: u8,
}

impl From<&InspectError> for ErrorJson {
    fn from(e: &InspectError) -> Self {
        Self {
            offset: e.offset(),
            // The line main prints, without "mlx5vf: " (see Error's Display).
            message: format!("inspect: {e}"),
            exit_code: super::EXIT_FAILURE,
        }
    }
}

/// A record whose header arrived, with the content of a small record once
/// parsed; listed when the record is complete.
struct Record {
    offset: u64,
    header: Header,
    content: Option<Content>,
}

/// What a small record holds.
#[derive(Clone, Copy)]
enum Content {
    StopCopySize(u64),
    Info(StreamInfo),
    End(StreamEnd),
}

/// Called with each complete record; an error stops the walk (as
/// [`InspectError::Output`]).
type OnRecord<'f> = dyn FnMut(&Record) -> io::Result<()> + 'f;

/// Reads the stream `input` in `chunk`-byte pieces, handing each complete
/// record to `on_record`; returns what the whole stream held.
fn walk(
    input: &mut dyn Read,
    chunk: usize,
    on_record: &mut OnRecord<'_>,
) -> Result<Summary, InspectError> {
    let mut reader = Reader::new();
    let mut pending: Option<Record> = None;
    // The first bytes decide whether this is an mlx5 stream at all, before
    // any of them is read as a record.
    let mut first = [0u8; HEADER_LEN];
    let mut have = 0;
    while have < HEADER_LEN {
        match input.read(first.get_mut(have..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(InspectError::Read(e)),
        }
    }
    let first = first.get(..have).unwrap_or_default();
    match Opening::of(first) {
        Opening::Empty | Opening::NotMlx5 => {
            return Err(InspectError::NotAStream {
                start: describe_start(first),
            });
        }
        Opening::PartialHeader | Opening::Mlx5(_) => {}
    }
    feed(&mut reader, first, &mut pending, on_record)?;
    let mut buf = vec![0u8; chunk.max(1)];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(InspectError::Read(e)),
        };
        feed(
            &mut reader,
            buf.get(..n).unwrap_or_default(),
            &mut pending,
            on_record,
        )?;
    }
    let verified = match reader.verdict() {
        Verdict::Complete { verified } => verified,
        Verdict::PartialRecord {
            offset,
            tag: None,
            missing,
        } => {
            return Err(InspectError::TruncatedHeader {
                offset,
                // CAST: HEADER_LEN is 16.
                have: (HEADER_LEN as u64).saturating_sub(missing),
                missing,
            });
        }
        Verdict::PartialRecord {
            offset,
            tag: Some(tag),
            missing,
        } => {
            let size = pending
                .as_ref()
                .filter(|p| p.offset == offset)
                .map_or(missing, |p| p.header.record_size);
            return Err(InspectError::TruncatedRecord {
                offset,
                tag,
                size,
                missing,
            });
        }
        Verdict::MissingEnd => {
            return Err(InspectError::MissingEnd {
                offset: reader.position(),
                records: reader.records(),
            });
        }
        Verdict::Failed(e) => return Err(InspectError::Malformed(e)),
    };
    Ok(Summary {
        records: reader.records(),
        fw_data_records: reader.fw_data_records(),
        fw_data_bytes: reader.fw_data_bytes(),
        total_bytes: reader.position(),
        verified,
    })
}

/// Parses `bytes` (the stream's next bytes), handing each record to
/// `on_record` as it completes.
fn feed(
    reader: &mut Reader,
    bytes: &[u8],
    pending: &mut Option<Record>,
    on_record: &mut OnRecord<'_>,
) -> Result<(), InspectError> {
    use mlx5vf_core::stream::Event;

    let mut rest = bytes;
    while !rest.is_empty() {
        let step = reader.feed(rest).map_err(InspectError::Malformed)?;
        if step.consumed == 0 {
            return Err(InspectError::Stalled {
                offset: reader.position(),
            });
        }
        for event in &step.events {
            match *event {
                Event::RecordStart { offset, header } => {
                    *pending = Some(Record {
                        offset,
                        header,
                        content: None,
                    });
                }
                Event::StopCopySize(v) => set_content(pending, Content::StopCopySize(v)),
                Event::StreamInfo(info) => set_content(pending, Content::Info(info)),
                Event::StreamEnd(end) => set_content(pending, Content::End(end)),
                Event::RecordEnd { offset, header } => {
                    let content = pending
                        .take()
                        .filter(|p| p.offset == offset)
                        .and_then(|p| p.content);
                    let record = Record {
                        offset,
                        header,
                        content,
                    };
                    on_record(&record).map_err(InspectError::Output)?;
                }
            }
        }
        rest = rest.get(step.consumed..).unwrap_or_default();
    }
    Ok(())
}

fn set_content(pending: &mut Option<Record>, content: Content) {
    if let Some(p) = pending {
        p.content = Some(content);
    }
}

fn tag_text(tag: Tag) -> String {
    match tag.linux_name() {
        Some(name) => name.to_owned(),
        None => format!("{:#x}", u32::from(tag)),
    }
}

fn flags_text(header: &Header) -> String {
    let name = if header.flags.optional() {
        "optional"
    } else {
        "mandatory"
    };
    if header.flags.other() == 0 {
        name.to_owned()
    } else {
        // Undefined bits: preserved and ignored, as Linux does; shown raw.
        format!("{name}({:#x})", header.flags.into_bits())
    }
}

/// One record as a line of text.
fn record_line(record: &Record) -> String {
    let Record {
        offset,
        ref header,
        content,
    } = *record;
    let (tag, flags, size) = (tag_text(header.tag), flags_text(header), header.record_size);
    let mut s = format!("offset={offset} tag={tag} flags={flags} size={size}");
    // Writing to a String cannot fail; the results are ignored below.
    match content {
        Some(Content::StopCopySize(v)) => {
            let _ = write!(s, " stop_copy_size={v}");
        }
        Some(Content::Info(i)) => {
            let _ = write!(
                s,
                " version={} producer={:?} chunk_mode={} pre_copy={} page_size={} \
                 chunk_size={} slots={}",
                i.version,
                i.producer_str(),
                u8::from(i.flags.chunk_mode()),
                u8::from(i.flags.pre_copy()),
                i.page_size,
                i.chunk_size,
                i.chunk_slots
            );
        }
        Some(Content::End(e)) => {
            let _ = write!(
                s,
                " records={} bytes={} crc32c={:#010x}",
                e.fw_data_records, e.fw_data_bytes, e.crc32c
            );
        }
        None => {}
    }
    s
}

fn integrity_text(sum: &Summary) -> &'static str {
    if sum.verified { "verified" } else { "absent" }
}

fn summary_line(sum: &Summary) -> String {
    format!(
        "summary records={} fw_data_records={} fw_data_bytes={} total_bytes={} integrity={}",
        sum.records,
        sum.fw_data_records,
        sum.fw_data_bytes,
        sum.total_bytes,
        integrity_text(sum)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlx5vf_core::stream::crc32c;

    fn header(size: u64, flags: u32, tag: u32) -> Vec<u8> {
        let mut h = size.to_le_bytes().to_vec();
        h.extend_from_slice(&flags.to_le_bytes());
        h.extend_from_slice(&tag.to_le_bytes());
        h
    }

    fn linux_stream() -> Vec<u8> {
        let mut s = header(8, 1, 1);
        s.extend_from_slice(&4096u64.to_le_bytes());
        for (i, len) in [100usize, 0, 4096, 7].into_iter().enumerate() {
            s.extend(header(len as u64, 0, 0));
            s.extend(std::iter::repeat_n(i as u8, len));
        }
        s
    }

    fn run_on(bytes: &[u8], opts: &Options) -> (String, Result<Summary, InspectError>) {
        let mut out = Vec::new();
        let r = inspect(&mut &bytes[..], &mut out, opts);
        (String::from_utf8(out).unwrap(), r)
    }

    #[test]
    fn any_read_size_gives_the_same_listing() {
        let bytes = linux_stream();
        let (whole, r) = run_on(&bytes, &Options::default());
        let sum = r.unwrap();
        assert_eq!(sum.fw_data_records, 4);
        assert_eq!(sum.fw_data_bytes, 4203);
        assert_eq!(sum.total_bytes, bytes.len() as u64);
        assert!(!sum.verified);
        for chunk in [1, 2, 7, 16, 17, 4096] {
            let (text, r) = run_on(&bytes, &Options { json: false, chunk });
            assert!(r.is_ok());
            assert_eq!(text, whole, "chunk {chunk}");
        }
    }

    #[test]
    fn verified_stream_with_our_records() {
        let mut s = vec![0u8; StreamInfo::RECORD_LEN];
        let info = StreamInfo {
            version: 1,
            flags: mlx5vf_core::stream::StreamInfoFlags::new().with_chunk_mode(true),
            page_size: 4096,
            chunk_size: 1 << 20,
            chunk_slots: 2,
            producer: StreamInfo::producer_from("test \"q\""),
        };
        info.encode_record(&mut s).unwrap();
        let payload = vec![0xa5u8; 300];
        s.extend(header(300, 0, 0));
        s.extend_from_slice(&payload);
        let end = StreamEnd {
            fw_data_records: 1,
            fw_data_bytes: 300,
            crc32c: crc32c::update(0, &payload),
        };
        let mut e = vec![0u8; StreamEnd::RECORD_LEN];
        end.encode_record(&mut e).unwrap();
        s.extend(e);
        let (text, r) = run_on(&s, &Options::default());
        assert!(r.unwrap().verified);
        assert!(
            text.contains("producer=\"test \\\"q\\\"\" chunk_mode=1 pre_copy=0"),
            "{text}"
        );
        let (json, r) = run_on(
            &s,
            &Options {
                json: true,
                chunk: 5,
            },
        );
        assert!(r.is_ok());
        let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(doc["records"][0]["stream_info"]["producer"], "test \"q\"");
        assert_eq!(doc["summary"]["integrity"], "verified");
    }

    #[test]
    fn truncations_are_told_apart() {
        let bytes = linux_stream();
        // Cut inside the second record's header (at 24 + 5).
        let (_, r) = run_on(&bytes[..29], &Options::default());
        assert!(matches!(
            r,
            Err(InspectError::TruncatedHeader {
                offset: 24,
                have: 5,
                missing: 11
            })
        ));
        // Cut 10 bytes into the 100-byte payload.
        let (text, r) = run_on(&bytes[..24 + 16 + 10], &Options::default());
        assert_eq!(text.lines().count(), 1);
        let e = r.unwrap_err();
        assert_eq!(
            e.to_string(),
            "truncated stream: FW_DATA record at byte 24 has 10 of its 100 payload bytes (90 missing)"
        );
    }

    /// The JSON listing is one document whatever the read size, with the
    /// error in it when the stream is malformed, and stops (as an output
    /// error) when the output fails.
    #[test]
    fn the_json_listing_is_one_document() {
        let bytes = linux_stream();
        let json = |bytes: &[u8], chunk| {
            let (text, r) = run_on(bytes, &Options { json: true, chunk });
            let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(text.lines().count(), 1, "{text}");
            (doc, r)
        };
        let (whole, r) = json(&bytes, READ_CHUNK);
        assert!(r.is_ok());
        for chunk in [1, 7, 17] {
            assert_eq!(json(&bytes, chunk).0, whole, "chunk {chunk}");
        }
        assert_eq!(whole["schema"], "mlx5vf/1");
        assert_eq!(whole["records"].as_array().unwrap().len(), 5);
        assert_eq!(whole["summary"]["total_bytes"], bytes.len());
        let (cut, r) = json(&bytes[..29], READ_CHUNK);
        assert!(matches!(r, Err(InspectError::TruncatedHeader { .. })));
        assert_eq!(cut["records"].as_array().unwrap().len(), 1);
        assert_eq!(cut["error"]["offset"], 24);
        assert!(cut.get("summary").is_none());

        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let opts = Options {
            json: true,
            chunk: 7,
        };
        let r = inspect(&mut &bytes[..], &mut Full, &opts);
        assert!(
            matches!(r, Err(InspectError::Output(ref e)) if e.kind() == io::ErrorKind::BrokenPipe),
            "{r:?}"
        );
    }
}
