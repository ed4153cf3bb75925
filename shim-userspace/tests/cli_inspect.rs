//! `mlx5vf inspect`, run as a process. Linux-format vectors are written
//! byte by byte here (not with core's encoders), so a codec bug shows; our
//! stream-info and stream-end records use core's `encode_record`.
// The tool and the simulated device (default features): built without
// them (a VMM's embedding) there is nothing here to test.
#![cfg(all(feature = "cli", feature = "sim"))]

mod common;

use std::io::Write;
use std::process::Stdio;

use common::{bin, one_json_document, run, run_stdin};
use mlx5vf_core::stream::crc32c;
use mlx5vf_core::stream::{StreamEnd, StreamInfo, StreamInfoFlags};
use serde_json::json;

/// A 16-byte record header, little-endian, spelled out field by field:
/// `u64 record_size, u32 flags, u32 tag`.
fn header(size: u64, flags: u32, tag: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(16);
    for i in 0..8 {
        h.push((size >> (8 * i)) as u8);
    }
    for i in 0..4 {
        h.push((flags >> (8 * i)) as u8);
    }
    for i in 0..4 {
        h.push((tag >> (8 * i)) as u8);
    }
    h
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// What Linux writes: STOP_COPY_SIZE, then FW_DATA images (one empty), with
/// an unknown optional record (Linux skips those) in between.
fn linux_stream() -> Vec<u8> {
    let mut s = vec![
        // record_size = 8, flags = OPTIONAL, tag = STOP_COPY_SIZE (1)
        0x08, 0, 0, 0, 0, 0, 0, 0, 0x01, 0, 0, 0, 0x01, 0, 0, 0, //
        // le64 0x800000
        0x00, 0x00, 0x80, 0, 0, 0, 0, 0,
    ];
    // @24: FW_DATA of 1000 bytes: record_size 0x3e8, flags MANDATORY, tag 0.
    s.extend([0xe8, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    s.extend(payload(1000, 1));
    // @1040: an empty FW_DATA.
    s.extend([0u8; 16]);
    // @1056: unknown OPTIONAL tag 0x1234, 5 bytes.
    s.extend([5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0x34, 0x12, 0, 0]);
    s.extend([9u8; 5]);
    // @1077: FW_DATA of 70000 = 0x11170 bytes.
    s.extend([0x70, 0x11, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    s.extend(payload(70000, 2));
    s
}

const LINUX_LISTING: &str = "\
offset=0 tag=STOP_COPY_SIZE flags=optional size=8 stop_copy_size=8388608
offset=24 tag=FW_DATA flags=mandatory size=1000
offset=1040 tag=FW_DATA flags=mandatory size=0
offset=1056 tag=0x1234 flags=optional size=5
offset=1077 tag=FW_DATA flags=mandatory size=70000
summary records=5 fw_data_records=3 fw_data_bytes=71000 total_bytes=71093 integrity=absent
";

fn info() -> StreamInfo {
    StreamInfo {
        version: 1,
        flags: StreamInfoFlags::new()
            .with_chunk_mode(true)
            .with_pre_copy(true),
        page_size: 4096,
        chunk_size: 8 << 20,
        chunk_slots: 2,
        producer: StreamInfo::producer_from("mlx5vf-test"),
    }
}

fn info_record() -> Vec<u8> {
    let mut b = vec![0u8; StreamInfo::RECORD_LEN];
    info().encode_record(&mut b).unwrap();
    b
}

fn end_record(end: StreamEnd) -> Vec<u8> {
    let mut b = vec![0u8; StreamEnd::RECORD_LEN];
    end.encode_record(&mut b).unwrap();
    b
}

/// Our format: stream-info, STOP_COPY_SIZE, three FW_DATA images, without
/// the end record; returns the bytes and the matching end record.
fn ours_without_end() -> (Vec<u8>, StreamEnd) {
    let mut s = info_record();
    s.extend(header(8, 1, 1));
    s.extend(0x1000u64.to_le_bytes());
    let mut crc = 0;
    let mut bytes = 0;
    for (i, len) in [4096usize, 1, 123_457].into_iter().enumerate() {
        let p = payload(len, i as u8);
        crc = crc32c::update(crc, &p);
        bytes += len as u64;
        s.extend(header(len as u64, 0, 0));
        s.extend(p);
    }
    let end = StreamEnd {
        fw_data_records: 3,
        fw_data_bytes: bytes,
        crc32c: crc,
    };
    (s, end)
}

#[test]
fn linux_format_stream() {
    let out = run_stdin(&["inspect"], &linux_stream());
    assert_eq!(out.ok(), LINUX_LISTING);
    let out = run_stdin(&["inspect", "-"], &linux_stream());
    assert_eq!(out.ok(), LINUX_LISTING);
}

#[test]
fn reads_a_file_argument() {
    let path = std::env::temp_dir().join(format!("mlx5vf-inspect-{}.bin", std::process::id()));
    std::fs::write(&path, linux_stream()).unwrap();
    let out = run(&["inspect", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.ok(), LINUX_LISTING);
    run(&["inspect", "/nonexistent/mlx5vf.bin"])
        .fails(1, "mlx5vf: inspect: cannot open /nonexistent/mlx5vf.bin");
}

/// No bytes are no stream: said plainly, not summarised as zero records.
#[test]
fn empty_input_is_not_a_stream() {
    let out = run_stdin(&["inspect"], &[]);
    out.fails(
        1,
        "inspect: not an mlx5 migration stream: it starts with no bytes",
    );
    assert_eq!(out.stdout, "");
}

/// Text, zeros or another driver's format: not an mlx5 stream, with what
/// the first bytes look like, instead of a record of exabytes.
#[test]
fn other_bytes_are_not_a_stream() {
    let text = b"mlx5vf migration notes: these lines are not a stream\n".repeat(100);
    let out = run_stdin(&["inspect"], &text);
    out.fails(
        1,
        "inspect: not an mlx5 migration stream: it starts with text \"mlx5vf migration\"",
    );
    assert_eq!(out.stdout, "");
    let out = run_stdin(&["inspect"], &[0u8; 1 << 20]);
    out.fails(1, "it starts with 16 zero bytes");
    let out = run_stdin(
        &["inspect", "--json"],
        &[0x7f, b'E', b'L', b'F', 2, 1, 1, 0],
    );
    let line = out.fails(1, "it starts with bytes 7f 45 4c 46 02 01 01 00");
    let doc = one_json_document(&out.stdout);
    assert_eq!(
        doc,
        json!({
            "schema": "mlx5vf/1",
            "command": "inspect",
            "records": [],
            "error": {
                "offset": 0,
                "message": line.strip_prefix("mlx5vf: ").unwrap(),
                "exit_code": 1,
            },
        })
    );
}

#[test]
fn our_stream_is_verified() {
    let (mut s, end) = ours_without_end();
    let end_at = s.len();
    s.extend(end_record(end));
    let out = run_stdin(&["inspect"], &s);
    let text = out.ok();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7, "{text}");
    assert_eq!(
        lines[0],
        "offset=0 tag=MLX5VF_STREAM_INFO flags=optional size=64 version=1 \
         producer=\"mlx5vf-test\" chunk_mode=1 pre_copy=1 page_size=4096 chunk_size=8388608 slots=2"
    );
    assert_eq!(
        lines[1],
        "offset=80 tag=STOP_COPY_SIZE flags=optional size=8 stop_copy_size=4096"
    );
    assert_eq!(lines[2], "offset=104 tag=FW_DATA flags=mandatory size=4096");
    assert_eq!(lines[3], "offset=4216 tag=FW_DATA flags=mandatory size=1");
    assert_eq!(
        lines[4],
        "offset=4233 tag=FW_DATA flags=mandatory size=123457"
    );
    assert_eq!(
        lines[5],
        format!(
            "offset={end_at} tag=MLX5VF_STREAM_END flags=optional size=24 records=3 bytes=127554 crc32c={:#010x}",
            end.crc32c
        )
    );
    assert_eq!(
        lines[6],
        format!(
            "summary records=6 fw_data_records=3 fw_data_bytes=127554 total_bytes={} integrity=verified",
            s.len()
        )
    );
}

/// Issue 14: `--json` prints one document (records, then the summary or
/// the error), built by serde_json and read back the same way.
#[test]
fn json_document() {
    let out = run_stdin(&["inspect", "--json"], &linux_stream());
    let doc = one_json_document(out.ok());
    assert_eq!(doc["command"], "inspect");
    let records = doc["records"].as_array().unwrap();
    assert_eq!(records.len(), 5);
    assert_eq!(
        records[0],
        json!({"offset": 0, "tag": "STOP_COPY_SIZE", "tag_value": 1, "flags": "optional",
               "flags_value": 1, "size": 8, "stop_copy_size": 8388608})
    );
    assert_eq!(
        records[3],
        json!({"offset": 1056, "tag": "0x1234", "tag_value": 4660, "flags": "optional",
               "flags_value": 1, "size": 5})
    );
    assert_eq!(
        doc["summary"],
        json!({"records": 5, "fw_data_records": 3, "fw_data_bytes": 71000,
               "total_bytes": 71093, "integrity": "absent"})
    );
    let (mut s, end) = ours_without_end();
    s.extend(end_record(end));
    let out = run_stdin(&["inspect", "--json"], &s);
    let doc = one_json_document(out.ok());
    assert_eq!(
        doc["records"][0]["stream_info"],
        json!({"version": 1, "producer": "mlx5vf-test", "chunk_mode": true, "pre_copy": true,
               "page_size": 4096, "chunk_size": 8388608, "chunk_slots": 2})
    );
    assert_eq!(
        doc["records"][5]["stream_end"],
        json!({"fw_data_records": 3, "fw_data_bytes": 127554,
               "crc32c": format!("{:#010x}", end.crc32c)})
    );
    assert_eq!(doc["summary"]["integrity"], "verified");
    // An error ends the document (the records before it kept), besides
    // the stderr line.
    let out = run_stdin(&["inspect", "--json"], &linux_stream()[..29]);
    let line = out.fails(1, "truncated stream");
    let doc = one_json_document(&out.stdout);
    assert_eq!(doc["records"].as_array().unwrap().len(), 1);
    assert_eq!(
        doc["error"],
        json!({"offset": 24,
               "message": "inspect: truncated stream: record header at byte 24 has 5 of 16 \
                           bytes (11 missing)",
               "exit_code": 1})
    );
    assert_eq!(
        line,
        "mlx5vf: inspect: truncated stream: record header at byte 24 has 5 of 16 bytes (11 missing)"
    );
    assert!(doc.get("summary").is_none());
}

/// Runs inspect on `bytes`, expects exit 1 with `message` as the whole
/// stderr line and `records` complete record lines on stdout, no summary.
fn rejects(bytes: &[u8], message: &str, records: usize) {
    let out = run_stdin(&["inspect"], bytes);
    let line = out.fails(1, message);
    assert_eq!(line, format!("mlx5vf: inspect: {message}"));
    assert_eq!(out.stdout.lines().count(), records, "{}", out.stdout);
    assert!(!out.stdout.contains("summary"));
}

#[test]
fn truncated_header() {
    rejects(
        &linux_stream()[..24 + 5],
        "truncated stream: record header at byte 24 has 5 of 16 bytes (11 missing)",
        1,
    );
    rejects(
        &linux_stream()[..15],
        "truncated stream: record header at byte 0 has 15 of 16 bytes (1 missing)",
        0,
    );
}

#[test]
fn truncated_payload() {
    rejects(
        &linux_stream()[..24 + 16 + 400],
        "truncated stream: FW_DATA record at byte 24 has 400 of its 1000 payload bytes (600 missing)",
        1,
    );
    rejects(
        &linux_stream()[..16 + 3],
        "truncated stream: STOP_COPY_SIZE record at byte 0 has 3 of its 8 payload bytes (5 missing)",
        0,
    );
    let stream = linux_stream();
    rejects(
        &stream[..stream.len() - 1],
        "truncated stream: FW_DATA record at byte 1077 has 69999 of its 70000 payload bytes (1 missing)",
        4,
    );
    // The largest record Linux accepts, cut short: truncated, not oversized.
    let mut s = linux_stream();
    s.extend(header(0xffff_ffff, 0, 0));
    s.extend([0u8; 10]);
    rejects(
        &s,
        "truncated stream: FW_DATA record at byte 71093 has 10 of its 4294967295 payload bytes \
         (4294967285 missing)",
        5,
    );
}

#[test]
fn oversized_record() {
    let mut s = linux_stream()[..24].to_vec();
    // record_size = 2^32: byte 4 = 1.
    s.extend([0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    s.extend([0u8; 64]);
    rejects(
        &s,
        "bad record at byte 24: record of 4294967296 bytes exceeds the 4 GiB - 1 limit",
        1,
    );
    // Even an optional record of an unknown tag, after the first record.
    let mut s = linux_stream()[..24].to_vec();
    s.extend(header(u64::MAX, 1, 0x99));
    rejects(
        &s,
        "bad record at byte 24: record of 18446744073709551615 bytes exceeds the 4 GiB - 1 limit",
        1,
    );
}

#[test]
fn unknown_mandatory_tag() {
    let mut s = linux_stream()[..24].to_vec();
    s.extend([4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0]);
    s.extend([0u8; 4]);
    rejects(
        &s,
        "bad record at byte 24: unknown mandatory record tag 0x7",
        1,
    );
}

#[test]
fn integrity_mismatches() {
    let (s, end) = ours_without_end();
    let at = s.len();
    let cases = [
        (
            StreamEnd {
                crc32c: end.crc32c ^ 1,
                ..end
            },
            format!(
                "bad record at byte {at}: integrity mismatch: CRC-32C {:#010x}, end record says {:#010x}",
                end.crc32c,
                end.crc32c ^ 1
            ),
        ),
        (
            StreamEnd {
                fw_data_records: 4,
                ..end
            },
            format!(
                "bad record at byte {at}: integrity mismatch: 3 FW_DATA records, end record says 4"
            ),
        ),
        (
            StreamEnd {
                fw_data_bytes: end.fw_data_bytes - 1,
                ..end
            },
            format!(
                "bad record at byte {at}: integrity mismatch: 127554 FW_DATA bytes, end record says 127553"
            ),
        ),
    ];
    for (bad_end, message) in cases {
        let mut bad = s.clone();
        bad.extend(end_record(bad_end));
        rejects(&bad, &message, 5);
    }
    // A flipped payload byte is caught too.
    let mut bad = s.clone();
    bad[200] ^= 0x40;
    bad.extend(end_record(end));
    let out = run_stdin(&["inspect"], &bad);
    out.fails(1, "integrity mismatch: CRC-32C");
}

#[test]
fn missing_end_record() {
    let (s, _) = ours_without_end();
    rejects(
        &s,
        &format!(
            "stream-end record missing: the stream starts with a stream-info record but ends at \
             byte {} after 5 records without one",
            s.len()
        ),
        5,
    );
}

#[test]
fn data_after_end_and_misplaced_info() {
    let (mut s, end) = ours_without_end();
    s.extend(end_record(end));
    let at = s.len();
    s.push(0);
    rejects(
        &s,
        &format!("bad record at byte {at}: data after the stream-end record"),
        6,
    );
    let mut s = linux_stream();
    s.extend(info_record());
    rejects(
        &s,
        "bad record at byte 71093: stream-info record is not the first record",
        5,
    );
}

/// A reader that goes away (`mlx5vf inspect | head`) ends the run quietly
/// with the status a shell gives a process killed by SIGPIPE.
#[test]
fn closed_stdout_exits_quietly() {
    let mut child = bin()
        .arg("inspect")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(&linux_stream());
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(141));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// 300 MiB of FW_DATA written to the child's stdin as it reads: the listing
/// is right and the child's peak memory stays far below the stream size.
#[test]
fn large_stream_in_constant_memory() {
    const MIB: usize = 1 << 20;
    const RECORD_MIB: usize = 32;
    const TOTAL_MIB: usize = 300;
    let mut child = bin()
        .arg("inspect")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&info_record()).unwrap();
    let mut chunk = payload(MIB, 7);
    let (mut crc, mut written, mut records) = (0u32, 0usize, 0u64);
    while written < TOTAL_MIB {
        let n = RECORD_MIB.min(TOTAL_MIB - written);
        stdin.write_all(&header((n * MIB) as u64, 0, 0)).unwrap();
        for _ in 0..n {
            chunk[..8].copy_from_slice(&(written as u64).to_le_bytes());
            crc = crc32c::update(crc, &chunk);
            stdin.write_all(&chunk).unwrap();
            written += 1;
        }
        records += 1;
    }
    let end = StreamEnd {
        fw_data_records: records,
        fw_data_bytes: (TOTAL_MIB * MIB) as u64,
        crc32c: crc,
    };
    stdin.write_all(&end_record(end)).unwrap();
    // The child has consumed all but a pipe's worth of the stream: its peak
    // resident size so far is what the whole run needs.
    let peak_kib = peak_rss_kib(pid);
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let total =
        StreamInfo::RECORD_LEN + StreamEnd::RECORD_LEN + 16 * records as usize + TOTAL_MIB * MIB;
    assert_eq!(
        stdout.lines().last().unwrap(),
        format!(
            "summary records={} fw_data_records={records} fw_data_bytes={} total_bytes={total} integrity=verified",
            records + 2,
            TOTAL_MIB * MIB
        )
    );
    if let Some(kib) = peak_kib {
        eprintln!("inspect peak RSS over a {TOTAL_MIB} MiB stream: {kib} KiB");
        assert!(kib < 64 * 1024, "peak RSS {kib} KiB");
    }
}

/// `VmHWM` of a process, where /proc has it.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
