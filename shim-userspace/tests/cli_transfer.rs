//! `mlx5vf migrate`, `save` and `load` end to end, through the binary:
//! round trips in every mode, files, pipes, TCP across two processes, and
//! each class of `load` failure with its message and exit status.
// The tool and the simulated device (default features): built without
// them (a VMM's embedding) there is nothing here to test.
#![cfg(all(feature = "cli", feature = "sim"))]
mod common;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Stdio;

use rustix::fs::OFlags;
use rustix::pty::OpenptFlags;

use common::{Run, bin, one_json_document, run, run_stdin};

/// `migrate --json ARGS`: exit 0, one document on stdout with matching
/// digests, and the key=value summary for people on stderr.
fn migrate(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["migrate", "--json"];
    all.extend_from_slice(args);
    let r = run(&all);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let doc = one_json_document(&r.stdout);
    assert_eq!(doc["command"], "migrate");
    assert_eq!(doc["digests_match"], true, "{doc}");
    assert!(r.stderr.contains("digests_match=true"), "{}", r.stderr);
    doc
}

fn u64_of(doc: &serde_json::Value, key: &str) -> u64 {
    doc[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a count in {doc}"))
}

#[test]
fn migrate_chunk_mode() {
    let j = migrate(&["--from", "sim:state=64M,seed=5"]);
    assert!(u64_of(&j, "fw_data_records") >= 8);
    assert!(u64_of(&j, "bytes") > 64 << 20);
    // Two 8 MiB-ish slots, never the state size.
    let peak = u64_of(&j, "source_peak_buffer_bytes");
    assert!(peak < 30 << 20, "{peak}");
}

#[test]
fn migrate_legacy_mode() {
    let j = migrate(&["--from", "sim:state=20M,seed=6", "--legacy"]);
    assert_eq!(u64_of(&j, "fw_data_records"), 1);
}

#[test]
fn migrate_precopy() {
    let j = migrate(&["--from", "sim:state=64M,seed=7,dirty=1M", "--precopy"]);
    assert!(u64_of(&j, "precopy_rounds") >= 1);
    assert!(u64_of(&j, "precopy_bytes") > 0);
}

/// `content=off` (the overhead benchmarks' device) still moves and checks
/// every record header and version: digests match when both sides skip
/// content, and a destination that checks content refuses the unwritten
/// bytes, so the skipped content is really not generated.
#[test]
fn migrate_without_content() {
    let j = migrate(&[
        "--from",
        "sim:state=32M,seed=8,content=off",
        "--to",
        "sim:state=1M,seed=99,content=off",
    ]);
    assert!(u64_of(&j, "bytes") > 32 << 20);
    run(&[
        "migrate",
        "--from",
        "sim:state=32M,seed=8,content=off",
        "--to",
        "sim:state=1M,seed=99",
    ])
    .fails(1, "LOAD_VHCA_STATE(0x119)");
}

/// The chunk size follows the firmware's measured speed within the memory
/// cap: for a cold stop of 1 GiB at 10 ms per SAVE and 4 GB/s, the
/// downtime size is sqrt(S L R / 2) = 146 MB, so the 64 MiB cap over two
/// slots gives 32 MiB; `--memory-cap` lowers it and `--fixed-chunks` keeps
/// the configured size. The figures are measured with the machine's clock,
/// so the model sits far from every boundary: the measured L x R would
/// have to be 80 times too small to give 16 MiB (with 1 ms, a loaded
/// machine's scheduling noise once gave less than 32 MiB).
#[test]
fn the_chunk_size_follows_the_measured_firmware() {
    // Objects of at most 1 MiB: the policy, not an object, sizes the buffers.
    let slow = "sim:state=1G,seed=3,object=64K-1M,fw-rate=4G/s,latency=10ms,content=off";
    let to = "sim:state=1M,seed=99,content=off";
    let j = migrate(&["--from", slow, "--to", to]);
    assert_eq!(u64_of(&j, "source_chunk_size"), 32 << 20, "{j}");
    // Measured, so only roughly the modelled 10 ms.
    assert!(u64_of(&j, "source_fw_latency_ns") >= 1_000_000, "{j}");
    assert!(u64_of(&j, "source_peak_buffer_bytes") <= 64 << 20, "{j}");
    let capped = migrate(&["--from", slow, "--to", to, "--memory-cap", "16M"]);
    assert_eq!(u64_of(&capped, "source_chunk_size"), 8 << 20, "{capped}");
    assert!(
        u64_of(&capped, "source_peak_buffer_bytes") <= 16 << 20,
        "{capped}"
    );
    let fixed = migrate(&[
        "--from",
        slow,
        "--to",
        to,
        "--fixed-chunks",
        "--chunk-size",
        "16M",
    ]);
    assert_eq!(u64_of(&fixed, "source_chunk_size"), 16 << 20, "{fixed}");
    assert!(
        fixed.get("source_fw_latency_ns").is_some(),
        "measured, not used: {fixed}"
    );
}

/// `--timeline` draws a bar per firmware image in the SAVE and LOAD lanes
/// (the sim reports its commands) and names the file in the summary.
#[test]
fn migrate_draws_its_timeline() {
    let dir = std::env::temp_dir().join(format!("mlx5vf-timeline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.svg");
    let path_text = path.to_str().unwrap();
    let j = migrate(&["--from", "sim:state=32M,seed=4", "--timeline", path_text]);
    assert_eq!(j["timeline"], path_text);
    let svg = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    for lane in ["SAVE", "read + send", "receive", "LOAD", "source stopped"] {
        assert!(svg.contains(lane), "{lane}");
    }
    // The lane shades of src/cli/plot.rs: SAVE's two blues, LOAD's two
    // purples, one bar per image each.
    let bars = |shades: [&str; 2]| {
        shades
            .iter()
            .map(|c| svg.matches(&format!("fill=\"{c}\"")).count() as u64)
            .sum::<u64>()
    };
    let images = u64_of(&j, "fw_data_records");
    assert_eq!(bars(["#1F77B4", "#6BAED6"]), images);
    assert_eq!(bars(["#9467BD", "#C5B0D5"]), images);
}

#[test]
fn migrate_text_summary() {
    let r = run(&["migrate", "--from", "sim:state=16M"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    for key in [
        "bytes=",
        "records=",
        "fw_data_records=",
        "seconds=",
        "bytes_per_sec=",
        "downtime_seconds=",
        "peak_buffer_bytes=",
        "digests_match=true",
    ] {
        assert!(r.stderr.contains(key), "{key} missing:\n{}", r.stderr);
    }
}

fn digest_of(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("digest="))
        .unwrap_or_else(|| panic!("no digest in {stderr}"))
        .to_owned()
}

#[test]
fn save_to_a_file_then_load() {
    let dir = std::env::temp_dir().join(format!("mlx5vf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("state.bin");
    let f = file.to_str().unwrap();
    let s = run(&["save", "--device", "sim:state=24M,seed=11", "-o", f]);
    assert_eq!(s.code, Some(0), "{}", s.stderr);
    let l = run(&["load", "--device", "sim:state=2M", "-i", f]);
    assert_eq!(l.code, Some(0), "{}", l.stderr);
    assert_eq!(digest_of(&s.stderr), digest_of(&l.stderr));
    // inspect reads what save wrote.
    let i = run(&["inspect", f]);
    assert!(i.ok().contains("integrity=verified"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn save_pipe_load() {
    let mut save = bin()
        .args(["save", "--device", "sim:state=24M,seed=12", "--precopy"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let load = bin()
        .args(["load", "--device", "sim:state=1M"])
        .stdin(save.stdout.take().unwrap())
        .output()
        .unwrap();
    let save = save.wait_with_output().unwrap();
    let (s, l) = (
        String::from_utf8(save.stderr).unwrap(),
        String::from_utf8(load.stderr).unwrap(),
    );
    assert!(save.status.success(), "{s}");
    assert!(load.status.success(), "{l}");
    assert_eq!(digest_of(&s), digest_of(&l));
}

#[test]
fn save_over_tcp_to_another_process() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("tcp-listen://127.0.0.1:{port}");
    let connect = format!("tcp://127.0.0.1:{port}");
    let load = bin()
        .args(["load", "--device", "sim:state=1M", "-i", &listen, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // save retries the connection until the listener is up.
    let s = run(&[
        "save",
        "--device",
        "sim:state=40M,seed=13",
        "-o",
        &connect,
        "--json",
    ]);
    assert_eq!(s.code, Some(0), "{}", s.stderr);
    let l = load.wait_with_output().unwrap();
    let saved = one_json_document(&s.stdout);
    let loaded = one_json_document(&String::from_utf8(l.stdout).unwrap());
    assert_eq!(
        (&saved["command"], &loaded["command"]),
        (&"save".into(), &"load".into())
    );
    assert!(saved["digest"].is_string(), "{saved}");
    assert_eq!(saved["digest"], loaded["digest"]);
}

/// A valid stream of our format, from a small state.
fn saved_stream() -> Vec<u8> {
    let out = bin()
        .args(["save", "--device", "sim:state=2M,object=64K-256K,seed=21"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

fn saved_stream_without_records() -> Vec<u8> {
    let out = bin()
        .args([
            "save",
            "--no-integrity",
            "--device",
            "sim:state=2M,object=64K-256K,seed=21",
        ])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

fn load_of(stream: &[u8]) -> Run {
    run_stdin(&["load", "--device", "sim:state=1M"], stream)
}

#[test]
fn load_failure_classes() {
    let good = saved_stream();
    assert_eq!(load_of(&good).code, Some(0));
    // Truncated inside a record.
    load_of(&good[..good.len() / 2]).fails(1, "stream truncated");
    // Truncated on a record boundary, before the end record: only our end
    // record can tell.
    load_of(&good[..good.len() - 40]).fails(1, "stream-end record never arrived");
    // An unknown mandatory record.
    let mut s = good[..104].to_vec();
    s.extend_from_slice(&[
        4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x33, 0, 0, 0, 1, 2, 3, 4,
    ]);
    load_of(&s).fails(1, "unknown mandatory record tag 0x33");
    // An oversized record.
    let mut s = good[..104].to_vec();
    s.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    load_of(&s).fails(1, "exceeds the 4 GiB - 1 limit");
    // The end record's checksum does not match what arrived.
    let mut s = good.clone();
    let n = s.len();
    s[n - 8] ^= 0xff;
    load_of(&s).fails(1, "integrity mismatch: CRC-32C");
    // A payload byte flipped where no record of ours can tell (a stream
    // without them): the device refuses the image on LOAD. The LOAD runs
    // while the rest of the stream arrives (so the byte at which the
    // refusal is reported varies); its refusal still names the command.
    let mut s = saved_stream_without_records();
    s[24 + 16 + 500] ^= 1;
    load_of(&s).fails(1, "firmware: LOAD_VHCA_STATE(0x119)");
    // Usage errors: exit 2.
    run(&["load", "--device", "sim:state=5Q", "-i", "/dev/null"])
        .fails(2, "bad value \"5Q\" for key \"state\"");
    run(&["migrate", "--from", "pci:0000:00:00.0"]).fails(2, "unknown device spec");
    run(&["load", "-i", "/nonexistent/x"]).fails(1, "/nonexistent/x");
}

#[test]
fn save_needs_chunks_above_four_gib_in_legacy_mode() {
    let r = run(&[
        "save",
        "--device",
        "sim:state=5G",
        "--legacy",
        "-o",
        "/dev/null",
    ]);
    r.fails(1, "QUERY_VHCA_MIGRATION_STATE(0x117)");
}

#[test]
fn load_reads_stdin_in_any_pieces() {
    let good = saved_stream();
    let mut child = bin()
        .args(["load", "--device", "sim:state=1M", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for piece in good.chunks(777) {
        stdin.write_all(piece).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = one_json_document(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(doc["bytes"], good.len());
}

/// Issue 14: a load that received no state is a failure naming why, and
/// the device is left as it was (nothing touched it).
#[test]
fn a_load_without_state_fails() {
    // An empty file.
    let dir = std::env::temp_dir().join(format!("mlx5vf-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    run(&["load", "-i", empty.to_str().unwrap()]).fails(
        1,
        "empty stream: not one byte arrived, nothing to load; device untouched, in RUNNING",
    );
    // A text file: not a stream, and the first bytes shown (not a record of
    // exabytes).
    let text = dir.join("notes.txt");
    std::fs::write(&text, "mlx5vf notes: not a migration stream\n".repeat(50)).unwrap();
    run(&["load", "-i", text.to_str().unwrap()]).fails(
        1,
        "not a migration stream: it starts with text \"mlx5vf notes: no\"",
    );
    std::fs::remove_dir_all(dir).unwrap();
    // 1 MiB of zeros.
    run_stdin(&["load"], &vec![0u8; 1 << 20])
        .fails(1, "not a migration stream: it starts with 16 zero bytes");
    // Fewer bytes than one record header.
    run_stdin(&["load"], &[0x18, 0, 0])
        .fails(1, "not a migration stream: only 3 bytes (bytes 18 00 00)");
    // An mlx5 stream with no firmware image: the device is reset out of
    // RESUMING instead of being told the (empty) load is complete.
    let mut s = vec![8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0];
    s.extend_from_slice(&(8u64 << 20).to_le_bytes());
    run_stdin(&["load"], &s).fails(
        1,
        "no firmware image: the stream's 1 records (24 bytes) carry no FW_DATA payload, so \
         there is no state to load; device reset (VFIO_DEVICE_RESET), now RUNNING",
    );
}

/// Issue 14: the README's pipe from a device that cannot save fails on the
/// loading side too, instead of printing a digest.
#[test]
fn a_pipe_from_a_failed_save_fails_to_load() {
    let mut save = bin()
        .args(["save", "--device", "sim:state=4M,migratable=off"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let load = bin()
        .args(["load"])
        .stdin(save.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(!save.wait().unwrap().success());
    let l = Run {
        code: load.status.code(),
        stdout: String::from_utf8(load.stdout).unwrap(),
        stderr: String::from_utf8(load.stderr).unwrap(),
    };
    l.fails(1, "empty stream");
    assert!(!l.stderr.contains("digest="), "{}", l.stderr);
}

/// Issue 14: a stream in the kernel's format (none of our records) still
/// loads when it carries state.
#[test]
fn a_kernel_format_stream_with_state_loads() {
    let out = bin()
        .args(["save", "--device", "sim:state=2M,seed=23", "--no-integrity"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let saved = String::from_utf8(out.stderr).unwrap();
    assert!(saved.contains("stream_format=linux-mlx5"), "{saved}");
    let l = load_of(&out.stdout);
    assert_eq!(l.code, Some(0), "{}", l.stderr);
    assert!(
        l.stderr.contains("stream_format=linux-mlx5"),
        "{}",
        l.stderr
    );
    assert_eq!(digest_of(&saved), digest_of(&l.stderr));
}

/// Sends `signal` (a `kill` name: INT, TERM) to a child.
fn kill(child: &std::process::Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Issue 15: SIGINT while a load waits for the rest of its stream stops it;
/// the device is reset out of RESUMING and the failure is one line, exit 1.
#[test]
fn sigint_mid_load_resets_the_device() {
    let good = saved_stream();
    let mut child = bin()
        .args(["load"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&good[..good.len() / 2]).unwrap();
    // The writer stays open: the load waits for more, until the signal.
    std::thread::sleep(std::time::Duration::from_millis(500));
    kill(&child, "INT");
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let r = Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    let line = r.fails(1, "interrupted by SIGINT in resuming after ");
    assert!(
        line.ends_with("bytes; device reset (VFIO_DEVICE_RESET), now RUNNING"),
        "{line}"
    );
}

/// Issue 15: SIGTERM while a save waits on a reader that stopped reading
/// stops it; the source goes back to RUNNING.
#[test]
fn sigterm_mid_save_returns_the_source_to_running() {
    let mut child = bin()
        .args(["save", "--device", "sim:state=64M"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Nobody reads stdout: the save fills the pipe and waits.
    std::thread::sleep(std::time::Duration::from_millis(500));
    kill(&child, "TERM");
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let r = Run {
        code: status.code(),
        stdout: String::new(),
        stderr,
    };
    let line = r.fails(1, "interrupted by SIGTERM in stop-copy after ");
    assert!(line.ends_with("bytes; device back in RUNNING"), "{line}");
}

/// Issue 15: `load`, `save` and `migrate` say in their help where a device
/// is left after each kind of failure.
#[test]
fn help_says_where_a_failed_transfer_leaves_the_device() {
    let load = run(&["load", "--help"]);
    let text = load.ok();
    for needle in [
        "Where the device is left.",
        "empty stream",
        "untouched",
        "reset with VFIO_DEVICE_RESET, the uAPI's only way out of RESUMING",
        "SIGINT/SIGTERM/SIGHUP",
        "a RESUMING left by a killed load is reset",
    ] {
        assert!(
            text.contains(needle),
            "load --help lacks {needle:?}:\n{text}"
        );
    }
    let migrate = run(&["migrate", "--help"]);
    let text = migrate.ok();
    for needle in [
        "Where the devices are left.",
        "the source goes back to the state it was in",
        "the destination is reset out of RESUMING",
    ] {
        assert!(
            text.contains(needle),
            "migrate --help lacks {needle:?}:\n{text}"
        );
    }
    let save = run(&["save", "--help"]);
    assert!(save.ok().contains("Where the device is left."));
}

/// A pseudo-terminal: its master, and its slave opened as a file (which
/// `isatty()` calls a terminal).
fn pseudo_terminal() -> (File, File) {
    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    rustix::pty::grantpt(&master).unwrap();
    rustix::pty::unlockpt(&master).unwrap();
    let name = rustix::pty::ptsname(&master, Vec::new()).unwrap();
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        // Not the controlling terminal of the test process.
        .custom_flags(OFlags::NOCTTY.bits() as i32)
        .open(name.to_str().unwrap())
        .unwrap();
    (File::from(master), slave)
}

/// Reads the master until every slave is closed (EIO on Linux); returns
/// the byte count.
fn drain(mut master: File) -> u64 {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0;
    loop {
        match master.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n as u64,
            Err(e) if e.raw_os_error() == Some(5) => return total,
            Err(e) => panic!("reading the terminal: {e}"),
        }
    }
}

/// Issue 14: `save` without -o and a terminal on stdout refuses, in one
/// line with exit status 2, before writing a byte; -o - writes there anyway.
#[test]
fn save_refuses_a_terminal_on_stdout_unless_told() {
    let (master, slave) = pseudo_terminal();
    let reader = std::thread::spawn(move || drain(master));
    let refused = {
        let mut cmd = bin();
        cmd.args(["save", "--device", "sim:state=1M,object=64K-256K"])
            .stdin(Stdio::null())
            .stdout(slave)
            .stderr(Stdio::piped());
        // `cmd` (and with it our copy of the slave) is dropped here.
        cmd.output().unwrap()
    };
    let r = Run {
        code: refused.status.code(),
        stdout: String::new(),
        stderr: String::from_utf8(refused.stderr).unwrap(),
    };
    r.fails(
        2,
        "standard output is a terminal: refusing to write a binary stream to it; give -o FILE",
    );
    assert_eq!(reader.join().unwrap(), 0, "bytes reached the terminal");

    let (master, slave) = pseudo_terminal();
    let reader = std::thread::spawn(move || drain(master));
    let forced = {
        let mut cmd = bin();
        cmd.args([
            "save",
            "--device",
            "sim:state=1M,object=64K-256K",
            "-o",
            "-",
        ])
        .stdin(Stdio::null())
        .stdout(slave)
        .stderr(Stdio::piped());
        cmd.output().unwrap()
    };
    let stderr = String::from_utf8(forced.stderr).unwrap();
    assert!(forced.status.success(), "{stderr}");
    let saved: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("bytes="))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    // The terminal may add a carriage return before each newline byte.
    assert!(reader.join().unwrap() >= saved, "{stderr}");
}
