//! Telling an mlx5 migration stream from other bytes.
//!
//! The VFIO uAPI makes a device's migration stream opaque: only the driver
//! that wrote it knows its format. This tool knows one format, mlx5's
//! (Linux's `mlx5-vfio-pci` records, and ours, which adds two optional
//! records), so it counts records, diagnoses truncation and refuses
//! non-streams only for streams it recognises; every other stream is bytes,
//! reported as bytes.
//!
//! # How a stream is recognised
//! By its first record header (16 bytes: `u64 record_size, u32 flags, u32
//! tag`, little-endian), which must be one a writer of the format opens a
//! stream with:
//!
//! | opener | header | who writes it |
//! |---|---|---|
//! | stream-info | tag `0x6d760001`, flags OPTIONAL, size 64 | mlx5vf |
//! | STOP_COPY_SIZE | tag 1, flags OPTIONAL, size 8 | Linux with the size record (and mlx5vf) |
//! | FW_DATA | tag 0, no flags, size 1 ..= 4 GiB - 1 | Linux without it |
//!
//! Text, zeros, and the other drivers' formats we have seen fail this at the
//! first header (a text file's first eight bytes read as a record size in the
//! exabytes). Every later header must stay plausible too (a size up to
//! 4 GiB - 1; a known tag, or the OPTIONAL flag): a stream that breaks this
//! is treated as opaque from then on, and no record figures are reported.

use std::fmt::Write as _;

use mlx5vf_core::stream::{HEADER_LEN, Header, MAX_RECORD_SIZE, RecordFlags, STREAM_INFO_LEN, Tag};

/// What a device's driver expects on its data fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFormat {
    /// mlx5 records (our driver, our kernel module, Linux's `mlx5-vfio-pci`):
    /// the tool may refuse a stream that is not one before the device sees
    /// it, and may judge whether a stream carries any state.
    Mlx5,
    /// Anything: only the driver can judge the bytes (the uAPI's rule).
    Opaque,
}

/// Who wrote a recognised stream, by its first record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Producer {
    /// Opens with our stream-info record.
    Mlx5vf,
    /// Opens with a Linux record (STOP_COPY_SIZE or FW_DATA).
    LinuxMlx5,
}

/// What the first bytes of a stream say about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// No bytes at all.
    Empty,
    /// Fewer bytes than a record header, and they could begin one.
    PartialHeader,
    /// A header that opens an mlx5 stream.
    Mlx5(Producer),
    /// Not an mlx5 stream.
    NotMlx5,
}

/// The header of our stream-info record, the only way our streams open.
fn stream_info_opener() -> [u8; HEADER_LEN] {
    Header {
        // CAST: 64 fits any integer.
        record_size: STREAM_INFO_LEN as u64,
        flags: RecordFlags::OPTIONAL,
        tag: Tag::StreamInfo,
    }
    .to_bytes()
}

/// The header of Linux's STOP_COPY_SIZE record (an le64 payload).
fn stop_copy_size_opener() -> [u8; HEADER_LEN] {
    Header {
        record_size: 8,
        flags: RecordFlags::OPTIONAL,
        tag: Tag::StopCopySize,
    }
    .to_bytes()
}

impl Opening {
    /// Classifies a stream by its first bytes: `start` holds its first
    /// `min(16, length)` bytes.
    pub fn of(start: &[u8]) -> Self {
        if start.is_empty() {
            return Self::Empty;
        }
        let Ok(first) = <&[u8; HEADER_LEN]>::try_from(start) else {
            return if could_begin_an_opener(start) {
                Self::PartialHeader
            } else {
                Self::NotMlx5
            };
        };
        if *first == stream_info_opener() {
            return Self::Mlx5(Producer::Mlx5vf);
        }
        if *first == stop_copy_size_opener() {
            return Self::Mlx5(Producer::LinuxMlx5);
        }
        let h = Header::from_bytes(first);
        let fw_data = h.tag == Tag::FwData
            && h.flags == RecordFlags::MANDATORY
            && (1..=MAX_RECORD_SIZE).contains(&h.record_size);
        if fw_data {
            Self::Mlx5(Producer::LinuxMlx5)
        } else {
            Self::NotMlx5
        }
    }
}

/// Whether `prefix` (shorter than a header) agrees with some opener.
fn could_begin_an_opener(prefix: &[u8]) -> bool {
    let exact = |opener: [u8; HEADER_LEN]| opener.get(..prefix.len()) == Some(prefix);
    // FW_DATA: size bytes 4..8 zero (at most 4 GiB - 1), flags and tag zero;
    // bytes 0..4 are the size's low half, anything but all zero.
    let fw_data = prefix.iter().skip(4).all(|&b| b == 0)
        && (prefix.len() < 4 || prefix.iter().take(4).any(|&b| b != 0));
    exact(stream_info_opener()) || exact(stop_copy_size_opener()) || fw_data
}

/// The first bytes of a stream in words, for "not a migration stream"
/// messages: quoted text when they are printable, else hex.
pub fn describe_start(start: &[u8]) -> String {
    let shown = start.get(..HEADER_LEN).unwrap_or(start);
    if shown.is_empty() {
        return "no bytes".to_owned();
    }
    if shown.iter().all(|&b| b == 0) {
        return format!("{} zero bytes", shown.len());
    }
    let printable = |b: &u8| b.is_ascii_graphic() || matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    if shown.iter().all(printable) {
        let text = String::from_utf8_lossy(shown);
        return format!("text {text:?}");
    }
    let mut hex = String::from("bytes");
    for b in shown {
        let _ = write!(hex, " {b:02x}");
    }
    // A TLS handshake record (type 22, version 3.x): a tls:// sender
    // talking to a plain listener.
    if let [0x16, 0x03, ..] = shown {
        hex.push_str(", a TLS handshake: the sender uses tls://, so listen with tls-listen://");
    }
    hex
}

/// Records seen in a stream, counted by parsing headers only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordCounts {
    /// All records.
    pub records: u64,
    /// FW_DATA records (firmware images: chunks, PRE_COPY images).
    pub fw_data: u64,
    /// Their payload bytes.
    pub fw_data_bytes: u64,
}

/// Where the accounting of a stream stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Accounting {
    /// The first header has not fully arrived.
    Opening,
    /// Recognised; every header so far is plausible.
    Records(Producer),
    /// Not recognised, or a later header was implausible: bytes only.
    Opaque,
}

/// Follows the bytes of a stream passing through (saved or loaded) without
/// touching payloads: recognises it, counts records while it stays an mlx5
/// stream, and keeps its first bytes for messages.
#[derive(Clone, Debug)]
pub struct StreamTracker {
    accounting: Accounting,
    counts: RecordCounts,
    bytes: u64,
    start: [u8; HEADER_LEN],
    header: [u8; HEADER_LEN],
    have: usize,
    skip: u64,
}

impl Default for StreamTracker {
    fn default() -> Self {
        Self {
            accounting: Accounting::Opening,
            counts: RecordCounts::default(),
            bytes: 0,
            start: [0; HEADER_LEN],
            header: [0; HEADER_LEN],
            have: 0,
            skip: 0,
        }
    }
}

impl StreamTracker {
    /// Notes `bytes` (the next bytes of the stream).
    pub fn feed(&mut self, mut bytes: &[u8]) {
        if let (Ok(at), true) = (usize::try_from(self.bytes), self.bytes < HEADER_LEN as u64) {
            let n = (HEADER_LEN - at).min(bytes.len());
            if let (Some(dst), Some(src)) = (self.start.get_mut(at..at + n), bytes.get(..n)) {
                dst.copy_from_slice(src);
            }
        }
        self.bytes += bytes.len() as u64;
        while !bytes.is_empty() && self.accounting != Accounting::Opaque {
            if self.skip > 0 {
                let n = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.skip -= n as u64;
                bytes = bytes.get(n..).unwrap_or_default();
                continue;
            }
            let n = (HEADER_LEN - self.have).min(bytes.len());
            if let (Some(dst), Some(src)) = (
                self.header.get_mut(self.have..self.have + n),
                bytes.get(..n),
            ) {
                dst.copy_from_slice(src);
            }
            self.have += n;
            bytes = bytes.get(n..).unwrap_or_default();
            if self.have == HEADER_LEN {
                self.have = 0;
                self.take_header();
            }
        }
    }

    fn take_header(&mut self) {
        let h = Header::from_bytes(&self.header);
        if self.accounting == Accounting::Opening {
            self.accounting = match Opening::of(&self.header) {
                Opening::Mlx5(p) => Accounting::Records(p),
                _ => Accounting::Opaque,
            };
        } else {
            let known = h.tag.linux_name().is_some();
            if h.record_size > MAX_RECORD_SIZE || !(known || h.flags.optional()) {
                self.accounting = Accounting::Opaque;
            }
        }
        if self.accounting == Accounting::Opaque {
            return;
        }
        self.counts.records += 1;
        if h.tag == Tag::FwData {
            self.counts.fw_data += 1;
            self.counts.fw_data_bytes += h.record_size;
        }
        self.skip = h.record_size;
    }

    /// Bytes seen.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The first bytes of the stream (up to a header's worth).
    pub fn start(&self) -> &[u8] {
        let n = usize::try_from(self.bytes).map_or(HEADER_LEN, |b| b.min(HEADER_LEN));
        self.start.get(..n).unwrap_or_default()
    }

    /// What the first bytes say.
    pub fn opening(&self) -> Opening {
        Opening::of(self.start())
    }

    /// Who wrote the stream, while it is an mlx5 stream.
    pub fn producer(&self) -> Option<Producer> {
        match self.accounting {
            Accounting::Records(p) => Some(p),
            Accounting::Opening | Accounting::Opaque => None,
        }
    }

    /// The record counts, only while the stream is an mlx5 stream.
    pub fn counts(&self) -> Option<RecordCounts> {
        self.producer().map(|_| self.counts)
    }

    /// For an mlx5 stream that ends inside a record: how many bytes of it
    /// are missing (at least; a cut header hides the payload). `None` for a
    /// stream that ends on a record boundary or is not an mlx5 stream.
    pub fn missing(&self) -> Option<u64> {
        self.producer()?;
        if self.have > 0 {
            Some((HEADER_LEN - self.have) as u64)
        } else if self.skip > 0 {
            Some(self.skip)
        } else {
            None
        }
    }

    /// The stream's format in one word, for summaries: `mlx5vf`,
    /// `linux-mlx5`, or `opaque`.
    pub fn format_name(&self) -> &'static str {
        match self.producer() {
            Some(Producer::Mlx5vf) => "mlx5vf",
            Some(Producer::LinuxMlx5) => "linux-mlx5",
            None => "opaque",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlx5vf_core::stream::{StreamInfo, StreamInfoFlags};

    fn linux_stream() -> Vec<u8> {
        let mut s = stop_copy_size_opener().to_vec();
        s.extend_from_slice(&(8u64 << 20).to_le_bytes());
        s.extend_from_slice(&Header::fw_data(5).to_bytes());
        s.extend_from_slice(&[1; 5]);
        let opt = Header {
            record_size: 3,
            flags: RecordFlags::OPTIONAL,
            tag: Tag::Unknown(9),
        };
        s.extend_from_slice(&opt.to_bytes());
        s.extend_from_slice(&[2; 3]);
        s
    }

    #[test]
    fn counts_records_across_splits() {
        let s = linux_stream();
        for split in 1..s.len() {
            let mut c = StreamTracker::default();
            for piece in s.chunks(split) {
                c.feed(piece);
            }
            assert_eq!(
                c.counts(),
                Some(RecordCounts {
                    records: 3,
                    fw_data: 1,
                    fw_data_bytes: 5
                })
            );
            assert_eq!(c.missing(), None);
            assert_eq!(c.format_name(), "linux-mlx5");
            assert_eq!(c.bytes(), s.len() as u64);
        }
    }

    #[test]
    fn knows_when_the_stream_ends_inside_a_record() {
        let mut s = Vec::new();
        s.extend_from_slice(&Header::fw_data(5).to_bytes());
        s.extend_from_slice(&[1; 5]);
        let expect = |cut: usize| match cut {
            c if c < HEADER_LEN => None,
            c if c < HEADER_LEN + 5 => Some((HEADER_LEN + 5 - c) as u64),
            _ => None,
        };
        for cut in 0..=s.len() {
            let mut c = StreamTracker::default();
            c.feed(&s[..cut]);
            assert_eq!(c.missing(), expect(cut), "cut at {cut}");
        }
    }

    /// The trap of issue 15: eight bytes of text read as a record size.
    #[test]
    fn text_is_bytes_not_records() {
        let mut c = StreamTracker::default();
        c.feed(b"mlx5vf migration notes: this is not a stream\n");
        assert_eq!(c.counts(), None);
        assert_eq!(c.missing(), None);
        assert_eq!(c.format_name(), "opaque");
        assert_eq!(c.opening(), Opening::NotMlx5);
        assert_eq!(describe_start(c.start()), "text \"mlx5vf migration\"");
    }

    #[test]
    fn a_stream_that_goes_bad_stops_being_counted() {
        let mut s = linux_stream();
        s.extend_from_slice(b"\xff\xff\xff\xff\xff\xff\xff\xffjunkjunk");
        let mut c = StreamTracker::default();
        c.feed(&s);
        assert_eq!(c.counts(), None);
        assert_eq!(c.missing(), None);
    }

    #[test]
    fn openers() {
        let mut info = vec![0u8; StreamInfo::RECORD_LEN];
        StreamInfo {
            version: 1,
            flags: StreamInfoFlags::new(),
            page_size: 4096,
            chunk_size: 1 << 20,
            chunk_slots: 2,
            producer: StreamInfo::producer_from("t"),
        }
        .encode_record(&mut info)
        .unwrap();
        assert_eq!(Opening::of(&info[..16]), Opening::Mlx5(Producer::Mlx5vf));
        assert_eq!(
            Opening::of(&linux_stream()[..16]),
            Opening::Mlx5(Producer::LinuxMlx5)
        );
        assert_eq!(
            Opening::of(&Header::fw_data(4096).to_bytes()),
            Opening::Mlx5(Producer::LinuxMlx5)
        );
        assert_eq!(Opening::of(&[]), Opening::Empty);
        assert_eq!(Opening::of(&[0; 16]), Opening::NotMlx5);
        assert_eq!(
            Opening::of(&Header::fw_data(0).to_bytes()),
            Opening::NotMlx5
        );
        assert_eq!(
            Opening::of(&Header::fw_data(1 << 32).to_bytes()),
            Opening::NotMlx5
        );
        // Prefixes of a header.
        assert_eq!(Opening::of(&linux_stream()[..15]), Opening::PartialHeader);
        assert_eq!(Opening::of(&info[..3]), Opening::PartialHeader);
        assert_eq!(Opening::of(b"hello"), Opening::NotMlx5);
        assert_eq!(Opening::of(&[0; 4]), Opening::NotMlx5);
    }

    #[test]
    fn first_bytes_in_words() {
        assert_eq!(describe_start(&[0; 40]), "16 zero bytes");
        assert_eq!(
            describe_start(&[0x7f, b'E', b'L', b'F', 2, 1]),
            "bytes 7f 45 4c 46 02 01"
        );
        assert_eq!(describe_start(b"a\"b\n"), "text \"a\\\"b\\n\"");
        assert!(
            describe_start(&[0x16, 0x03, 0x01, 0x01, 0x02, 0x01])
                .ends_with("a TLS handshake: the sender uses tls://, so listen with tls-listen://")
        );
    }
}
