//! `save` and `load` against a driver we did not write (issue 15): one that
//! validates its stream and keeps RESUMING, one whose stream is opaque, one
//! with a synchronous read path ([`common::foreign`]). Every failure leaves
//! the device in a state the uAPI defines, the next load works without
//! manual steps, a signal mid-transfer is one more failure, and an opaque
//! stream is reported as bytes.
// The tool and the simulated device (default features): built without
// them (a VMM's embedding) there is nothing here to test.
#![cfg(all(feature = "cli", feature = "sim"))]
mod common;

use std::io::{self, BufReader, Read, Write};
use std::sync::atomic::Ordering;

use mlx5vf::backend::MigrationDevice;
use mlx5vf::interrupt::Interrupt;
use mlx5vf::transfer::{self, Aftermath, Failure, Quiet, SaveOptions};
use mlx5vf_core::vfio::MigState;

use common::foreign::{Foreign, MAGIC, Quirks};

const SOURCE: &str = "sim:state=4M,seed=31,object=64K-512K";
const DESTINATION: &str = "sim:state=2M,seed=32";
const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

fn validating() -> Quirks {
    Quirks {
        validates: true,
        ..Quirks::default()
    }
}

fn opaque() -> Quirks {
    Quirks {
        validates: true,
        opaque: true,
        ..Quirks::default()
    }
}

fn saved(quirks: Quirks, precopy: bool) -> (Vec<u8>, String) {
    let mut src = Foreign::new(SOURCE, quirks);
    let mut out = Vec::new();
    let opts = SaveOptions {
        precopy,
        ..SaveOptions::default()
    };
    transfer::save(&mut src, &mut out, &opts, &Quiet).unwrap();
    (out, src.digest().unwrap())
}

fn load(dev: &mut Foreign, stream: &[u8]) -> Result<transfer::LoadReport, transfer::TransferError> {
    transfer::load(dev, &mut BufReader::new(stream), &Quiet)
}

/// A refused load resets the device out of RESUMING (the uAPI's only way
/// out), so the next load needs no manual step. (Before: the device stayed
/// in RESUMING and the next load failed "no data file returned".)
#[test]
fn a_refused_load_resets_and_the_next_load_works() {
    let (stream, digest) = saved(validating(), false);
    let mut dst = Foreign::new(DESTINATION, validating());
    let e = load(&mut dst, &stream[..stream.len() / 2]).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("the device refused the stream on leaving RESUMING"),
        "{msg}"
    );
    assert!(msg.contains("EINVAL (errno 22: Invalid argument)"), "{msg}");
    assert!(msg.contains("the stream is truncated"), "{msg}");
    assert_eq!(e.device, Aftermath::Reset(MigState::Running));
    assert_eq!(dst.state().unwrap(), MigState::Running);
    assert_eq!(dst.resets.load(Ordering::SeqCst), 1);
    let r = load(&mut dst, &stream).unwrap();
    assert_eq!(r.recovered, None);
    assert_eq!(dst.digest().unwrap(), digest);
}

/// A device some earlier user left in RESUMING (a load killed outright, so
/// nothing could clean up) is reset before the load, which then works.
#[test]
fn a_device_found_in_resuming_is_reset_before_loading() {
    let (stream, digest) = saved(validating(), false);
    let mut dst = Foreign::new(DESTINATION, validating());
    let mut file = dst.set_state(MigState::Resuming).unwrap().unwrap();
    file.write_all(&stream[..1000]).unwrap();
    drop(file);
    assert_eq!(dst.state().unwrap(), MigState::Resuming);
    let r = load(&mut dst, &stream).unwrap();
    let recovered = r.recovered.unwrap();
    assert_eq!(recovered.found, MigState::Resuming);
    assert_eq!(recovered.action, Aftermath::Reset(MigState::Running));
    assert_eq!(
        recovered.to_string(),
        "found in RESUMING: device reset (VFIO_DEVICE_RESET), now RUNNING"
    );
    assert_eq!(dst.digest().unwrap(), digest);
}

/// A device left saving (STOP_COPY, its fd closed) is walked back to STOP
/// before a save, which then works.
#[test]
fn a_device_found_saving_is_walked_back_before_saving() {
    let mut src = Foreign::new(SOURCE, validating());
    src.set_state(MigState::StopCopy).unwrap().unwrap();
    let mut out = Vec::new();
    let r = transfer::save(&mut src, &mut out, &SaveOptions::default(), &Quiet).unwrap();
    let recovered = r.recovered.unwrap();
    assert_eq!(recovered.found, MigState::StopCopy);
    assert_eq!(recovered.action, Aftermath::Returned(MigState::Stop));
    assert!(r.bytes > 4 << 20);
}

/// An opaque stream is bytes: no record figures, no "bytes missing" made
/// of scrambled data, and it round-trips. (Before: the scrambled bytes were
/// read as record sizes in the exabytes.)
#[test]
fn an_opaque_stream_is_reported_as_bytes() {
    let mut src = Foreign::new(SOURCE, opaque());
    let mut out = Vec::new();
    let r = transfer::save(&mut src, &mut out, &SaveOptions::default(), &Quiet).unwrap();
    assert!(out.starts_with(MAGIC));
    assert_eq!(r.records, None);
    assert_eq!(r.format, "opaque");
    assert_eq!(r.bytes, out.len() as u64);
    let mut dst = Foreign::new(DESTINATION, opaque());
    let l = load(&mut dst, &out).unwrap();
    assert_eq!((l.records, l.format, l.bytes), (None, "opaque", r.bytes));
    assert_eq!(dst.digest(), src.digest());
    // Cut short: refused by the device, and the tool claims nothing about
    // records it cannot see.
    let mut dst = Foreign::new(DESTINATION, opaque());
    let e = load(&mut dst, &out[..out.len() - 46]).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("the device refused the stream"), "{msg}");
    assert!(!msg.contains("missing"), "{msg}");
    assert!(!msg.contains("truncated"), "{msg}");
    assert_eq!(dst.state().unwrap(), MigState::Running);
}

/// A refused write says the device refused, at which stream offset, and
/// the errno by name and number (not just "Bad address").
#[test]
fn a_refused_write_names_the_device_the_offset_and_the_errno() {
    let (stream, _) = saved(opaque(), false);
    let mut bad = stream.clone();
    bad[5] ^= 0xff;
    let mut dst = Foreign::new(DESTINATION, opaque());
    let e = load(&mut dst, &bad).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the device refused the stream data at byte 5: EFAULT (errno 14: Bad address); device \
         reset (VFIO_DEVICE_RESET), now RUNNING"
    );
    // An mlx5 stream handed to this driver is refused at its first byte;
    // the tool does not refuse it itself (the stream is the driver's to
    // judge).
    let (mlx5, _) = saved(Quirks::default(), false);
    let e = load(&mut dst, &mlx5).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("the device refused the stream data at byte 0: EFAULT"),
        "{e}"
    );
}

/// A synchronous read path with empty reads at PRE_COPY's temporary end
/// saves with PRE_COPY and loads back.
#[test]
fn a_synchronous_driver_saves_with_precopy() {
    let quirks = Quirks {
        synchronous: true,
        opaque: true,
        validates: true,
    };
    let (stream, digest) = saved(quirks, true);
    let mut dst = Foreign::new(DESTINATION, quirks);
    load(&mut dst, &stream).unwrap();
    assert_eq!(dst.digest().unwrap(), digest);
}

/// An input that raises the interrupt after `after` bytes (a signal while
/// the stream arrives).
struct SignalAfter<'a> {
    data: &'a [u8],
    at: usize,
    after: usize,
    interrupt: Interrupt,
    signal: i32,
}

impl Read for SignalAfter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at >= self.after {
            self.interrupt.raise(self.signal);
        }
        let n = buf.len().min(self.data.len() - self.at).min(64 << 10);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// SIGINT mid-load: the load stops, the device is reset out of RESUMING,
/// and the next load works.
#[test]
fn an_interrupted_load_resets_the_device() {
    let (stream, digest) = saved(validating(), false);
    let mut dst = Foreign::new(DESTINATION, validating());
    let interrupt = Interrupt::new();
    let mut input = BufReader::with_capacity(
        64 << 10,
        SignalAfter {
            data: &stream,
            at: 0,
            after: stream.len() / 3,
            interrupt: interrupt.clone(),
            signal: SIGINT,
        },
    );
    let e = transfer::load(&mut dst, &mut input, &interrupt).unwrap_err();
    assert!(e.is_interrupted(), "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with("interrupted by SIGINT in resuming after "),
        "{msg}"
    );
    assert!(
        msg.ends_with("; device reset (VFIO_DEVICE_RESET), now RUNNING"),
        "{msg}"
    );
    assert_eq!(dst.state().unwrap(), MigState::Running);
    load(&mut dst, &stream).unwrap();
    assert_eq!(dst.digest().unwrap(), digest);
}

/// An output that raises the interrupt after `after` bytes.
struct SignalAfterWriting {
    written: usize,
    after: usize,
    interrupt: Interrupt,
}

impl Write for SignalAfterWriting {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len();
        if self.written >= self.after {
            self.interrupt.raise(SIGTERM);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// SIGTERM mid-save: the save stops and the source goes back to RUNNING
/// (as after any failed migration: the VM goes on where it was).
#[test]
fn an_interrupted_save_returns_the_source_to_running() {
    for precopy in [false, true] {
        let mut src = Foreign::new(SOURCE, opaque());
        let interrupt = Interrupt::new();
        let mut out = SignalAfterWriting {
            written: 0,
            after: 1 << 20,
            interrupt: interrupt.clone(),
        };
        let opts = SaveOptions {
            precopy,
            read_size: 64 << 10,
            ..SaveOptions::default()
        };
        let e = transfer::save(&mut src, &mut out, &opts, &interrupt).unwrap_err();
        assert!(
            matches!(
                e.failure,
                Failure::Interrupted {
                    signal: SIGTERM,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(e.device, Aftermath::Returned(MigState::Running), "{e}");
        assert_eq!(src.state().unwrap(), MigState::Running);
        // And it saves again.
        transfer::save(&mut src, &mut Vec::new(), &SaveOptions::default(), &Quiet).unwrap();
    }
}

/// A stream with no bytes is no state, whatever the driver: the device is
/// not touched.
#[test]
fn an_empty_stream_leaves_the_device_untouched() {
    let mut dst = Foreign::new(DESTINATION, opaque());
    let e = load(&mut dst, &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "empty stream: not one byte arrived, nothing to load; device untouched, in RUNNING"
    );
    assert_eq!(dst.resets.load(Ordering::SeqCst), 0);
}
