//! The core's `read()`/`write()` loop (`device::file_ops`): which answer wins
//! when, over ports that fault, wait or hand the wait back, as the Linux
//! driver's file operations answer.
mod common;

use common::*;
use mlx5vf_core::device::file_ops::{
    self, Blocking, CopyDest, CopySource, IoError, IoOutcome, ReadPort, WaitFor, WritePort,
};
use mlx5vf_core::device::{Config, Device, DeviceError, FileId, ReadSegment};
use mlx5vf_core::errno::Errno;
use mlx5vf_core::vfio::MigState::*;

const SMALL: &str = "sim:state=4M,object=64K-256K,seed=9";

/// A reader whose copies can fault after a given number of bytes, and whose
/// wait either completes one SAVE (as a sleeping shim would be woken) or
/// hands the wait back.
struct Reader<'a> {
    dev: &'a mut Device<TestHal>,
    out: Vec<u8>,
    /// Bytes this reader copies before every later copy faults.
    fault_after: Option<usize>,
    /// The errno a fault reports.
    fault: Errno,
    sleeps: bool,
    waits: u32,
}

impl<'a> Reader<'a> {
    fn new(dev: &'a mut Device<TestHal>) -> Self {
        Self {
            dev,
            out: vec![],
            fault_after: None,
            fault: Errno::EFAULT,
            sleeps: false,
            waits: 0,
        }
    }
}

impl ReadPort<TestHal> for Reader<'_> {
    fn device(&mut self) -> &mut Device<TestHal> {
        self.dev
    }

    fn copy_out(&mut self, _at: usize, src: CopySource<'_>) -> Result<usize, Errno> {
        let bytes = match src {
            CopySource::Bytes(b) => b.to_vec(),
            CopySource::Buffer {
                buffer,
                offset,
                len,
            } => self.dev.hal().buffer(buffer)[offset as usize..][..len].to_vec(),
        };
        let room = match self.fault_after {
            Some(limit) => limit.saturating_sub(self.out.len()),
            None => usize::MAX,
        };
        let n = bytes.len().min(room);
        self.out.extend_from_slice(&bytes[..n]);
        if n == 0 && !bytes.is_empty() {
            return Err(self.fault);
        }
        Ok(n)
    }

    fn wait(&mut self, why: WaitFor) -> bool {
        assert_eq!(why, WaitFor::SaveData);
        if !self.sleeps {
            return false;
        }
        self.waits += 1;
        assert!(complete_one(self.dev), "asked to wait for no SAVE");
        true
    }
}

/// A writer over `data` whose copies can fault after a given offset.
struct Writer<'a> {
    dev: &'a mut Device<TestHal>,
    data: &'a [u8],
    fault_at: Option<usize>,
}

impl WritePort<TestHal> for Writer<'_> {
    fn device(&mut self) -> &mut Device<TestHal> {
        self.dev
    }

    fn copy_in(&mut self, at: usize, dst: CopyDest<'_>) -> Result<usize, Errno> {
        let end = self.fault_at.unwrap_or(usize::MAX).min(self.data.len());
        let n = dst.len().min(end.saturating_sub(at));
        if n == 0 && !dst.is_empty() {
            return Err(Errno::EFAULT);
        }
        let src = &self.data[at..at + n];
        match dst {
            CopyDest::Bytes(d) => d[..n].copy_from_slice(src),
            CopyDest::Buffer { buffer, offset, .. } => {
                self.dev.hal_mut().buffer_mut(buffer)[offset as usize..][..n].copy_from_slice(src)
            }
        }
        Ok(n)
    }
}

fn dev() -> Device<TestHal> {
    device(SMALL, Config::default())
}

/// The whole STOP_COPY stream of a fresh device, read cleanly.
fn clean_stream() -> Vec<u8> {
    let mut d = dev();
    let f = set_state(&mut d, StopCopy).unwrap().unwrap();
    let mut r = Reader::new(&mut d);
    r.sleeps = true;
    loop {
        match file_ops::read(&mut r, f, 1 << 20, Blocking::Blocking) {
            IoOutcome::Done(0) => break,
            IoOutcome::Done(_) => {}
            other => panic!("{other:?}"),
        }
    }
    r.out
}

#[test]
fn a_blocking_read_waits_through_its_port_and_returns_data() {
    let mut d = dev();
    let f = set_state(&mut d, StopCopy).unwrap().unwrap();
    let mut r = Reader::new(&mut d);
    r.sleeps = true;
    // Our records first, then the first chunk after one wait.
    let IoOutcome::Done(first) = file_ops::read(&mut r, f, 1 << 20, Blocking::Blocking) else {
        panic!()
    };
    assert!(first > 0);
    let IoOutcome::Done(n) = file_ops::read(&mut r, f, 1 << 20, Blocking::Blocking) else {
        panic!()
    };
    assert!(n > 0);
    assert_eq!(r.waits, 1);
}

#[test]
fn a_read_with_nothing_queued_hands_back_the_wait_or_eagain() {
    let mut d = dev();
    let f = set_state(&mut d, StopCopy).unwrap().unwrap();
    let mut r = Reader::new(&mut d);
    // The records queued at open are read; the first chunk is in flight.
    assert!(matches!(
        file_ops::read(&mut r, f, 1 << 20, Blocking::Blocking),
        IoOutcome::Done(n) if n > 0
    ));
    assert_eq!(
        file_ops::read(&mut r, f, 1 << 20, Blocking::Blocking),
        IoOutcome::Wait(WaitFor::SaveData)
    );
    let e = file_ops::read(&mut r, f, 1 << 20, Blocking::NonBlocking);
    assert_eq!(
        e,
        IoOutcome::Failed(IoError::Device(DeviceError::WouldBlock))
    );
    let IoOutcome::Failed(e) = e else { panic!() };
    assert_eq!(e.errno(), Errno::EAGAIN);
}

#[test]
fn bytes_read_win_over_enomsg_and_enomsg_comes_alone() {
    let mut d = device(SMALL, Config::default());
    let f = set_state(&mut d, PreCopy).unwrap().unwrap();
    while complete_one(&mut d) {}
    let mut r = Reader::new(&mut d);
    // Everything queued, then the temporary end: the count wins.
    let IoOutcome::Done(n) = file_ops::read(&mut r, f, 64 << 20, Blocking::Blocking) else {
        panic!()
    };
    assert!(n > 0);
    // The next read finds nothing: ENOMSG, never a zero-length read.
    let e = file_ops::read(&mut r, f, 1 << 20, Blocking::Blocking);
    assert_eq!(
        e,
        IoOutcome::Failed(IoError::Device(DeviceError::NoMessage))
    );
    let IoOutcome::Failed(e) = e else { panic!() };
    assert_eq!(e.errno(), Errno::ENOMSG);
}

#[test]
fn a_fault_on_the_first_byte_is_the_ports_errno_and_consumes_nothing() {
    let whole = clean_stream();
    let mut d = dev();
    let f = set_state(&mut d, StopCopy).unwrap().unwrap();
    let mut r = Reader::new(&mut d);
    r.fault_after = Some(0);
    r.fault = Errno::EIO;
    assert_eq!(
        file_ops::read(&mut r, f, 1 << 20, Blocking::Blocking),
        IoOutcome::Failed(IoError::Copy(Errno::EIO))
    );
    // Nothing was consumed: a good reader gets the stream from its start.
    r.fault_after = None;
    r.sleeps = true;
    while let IoOutcome::Done(n) = file_ops::read(&mut r, f, 1 << 20, Blocking::Blocking) {
        if n == 0 {
            break;
        }
    }
    assert_eq!(r.out, whole);
}

#[test]
fn a_fault_after_some_bytes_returns_the_count_and_keeps_the_stream_whole() {
    let whole = clean_stream();
    let mut d = dev();
    let f = set_state(&mut d, StopCopy).unwrap().unwrap();
    let mut r = Reader::new(&mut d);
    r.sleeps = true;
    // Fault inside a record header, inside our stream-info payload and in
    // the middle of firmware data, each after bytes were copied.
    for limit in [5, 40, 70_000, 1_000_000] {
        r.fault_after = Some(limit);
        // A read also ends early where the queued data ends (bytes win over
        // waiting): read until the fault stops one.
        while r.out.len() < limit {
            let before = r.out.len();
            match file_ops::read(&mut r, f, 4 << 20, Blocking::Blocking) {
                IoOutcome::Done(n) => {
                    assert_eq!(n, r.out.len() - before, "the count is what was copied")
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(r.out.len(), limit);
    }
    r.fault_after = None;
    loop {
        match file_ops::read(&mut r, f, 1 << 20, Blocking::Blocking) {
            IoOutcome::Done(0) => break,
            IoOutcome::Done(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(r.out, whole, "only copied bytes were consumed");
}

#[test]
fn end_of_stream_reads_zero_every_time() {
    let mut d = dev();
    let f = set_state(&mut d, StopCopy).unwrap().unwrap();
    let mut r = Reader::new(&mut d);
    r.sleeps = true;
    while file_ops::read(&mut r, f, 1 << 20, Blocking::Blocking) != IoOutcome::Done(0) {}
    for blocking in [Blocking::Blocking, Blocking::NonBlocking] {
        assert_eq!(file_ops::read(&mut r, f, 7, blocking), IoOutcome::Done(0));
    }
}

/// A destination whose state differs from the source's until it loads.
fn resuming() -> (Device<TestHal>, FileId) {
    let mut d = device("sim:state=4M,object=64K-256K,seed=10", Config::default());
    assert_ne!(d.hal().fw.digest(0), dev().hal().fw.digest(0));
    set_state(&mut d, Stop).unwrap();
    let f = set_state(&mut d, Resuming).unwrap().unwrap();
    (d, f)
}

fn write_all(w: &mut Writer<'_>, f: FileId) {
    let mut at = 0;
    while at < w.data.len() {
        let rest = &w.data[at..];
        let mut port = Writer {
            dev: w.dev,
            data: rest,
            fault_at: None,
        };
        match file_ops::write(&mut port, f, rest.len(), Blocking::Blocking) {
            IoOutcome::Done(n) if n > 0 => at += n,
            other => panic!("at {at}: {other:?}"),
        }
    }
}

#[test]
fn a_write_fault_on_the_first_byte_consumes_nothing_later_ones_return_the_count() {
    let stream = clean_stream();
    let (mut d, f) = resuming();
    let mut w = Writer {
        dev: &mut d,
        data: &stream,
        fault_at: Some(0),
    };
    assert_eq!(
        file_ops::write(&mut w, f, stream.len(), Blocking::Blocking),
        IoOutcome::Failed(IoError::Copy(Errno::EFAULT))
    );
    // A fault inside a header, inside stream-info, and inside firmware data.
    let mut at = 0;
    for fault_at in [7, 45, 300_000] {
        let mut w = Writer {
            dev: &mut d,
            data: &stream[at..],
            fault_at: Some(fault_at - at),
        };
        assert_eq!(
            file_ops::write(&mut w, f, stream.len() - at, Blocking::Blocking),
            IoOutcome::Done(fault_at - at)
        );
        at = fault_at;
    }
    let mut w = Writer {
        dev: &mut d,
        data: &stream[at..],
        fault_at: None,
    };
    write_all(&mut w, f);
    set_state(&mut d, Stop).expect("the stream arrived whole");
    assert_eq!(d.hal().fw.digest(0), dev().hal().fw.digest(0));
}

#[test]
fn a_bad_stream_fails_the_write_with_its_errno_and_the_file_stays_dead() {
    let (mut d, f) = resuming();
    let text = b"this is not a migration stream, just some text.\n".repeat(4);
    let mut w = Writer {
        dev: &mut d,
        data: &text,
        fault_at: None,
    };
    let IoOutcome::Failed(IoError::Device(e)) =
        file_ops::write(&mut w, f, text.len(), Blocking::Blocking)
    else {
        panic!("a text file was accepted")
    };
    assert_ne!(e.errno(), Errno::EAGAIN);
    // Linux answers every later write of a failed file with ENODEV.
    let mut w = Writer {
        dev: &mut d,
        data: &text,
        fault_at: None,
    };
    let again = file_ops::write(&mut w, f, text.len(), Blocking::Blocking);
    let IoOutcome::Failed(again) = again else {
        panic!("{again:?}")
    };
    assert_eq!(again.errno(), Errno::ENODEV);
}

#[test]
fn a_reader_still_copying_from_a_replaced_file_does_not_block_the_new_files_reader() {
    let mut d = dev();
    let old = set_state(&mut d, PreCopy).unwrap().unwrap();
    // A reader takes a segment and is still copying it (lock dropped)...
    let seg = d.read_begin(old, 1 << 20).unwrap();
    assert!(seg.inline_bytes().is_some() || matches!(seg, ReadSegment::Buffer { .. }));
    // ... when a reset ends the file and the VMM walks to STOP_COPY again.
    d.handle_reset();
    let new = set_state(&mut d, StopCopy).unwrap().unwrap();
    assert_ne!(old, new);
    // The new file's reader is not the old one: no EBUSY.
    d.read_begin(new, 1 << 20)
        .expect("the new file's first segment");
    // One reader per file still holds.
    assert_eq!(d.read_begin(new, 1), Err(DeviceError::ReaderBusy));
    d.read_end(new, 0).unwrap();
    // The old reader's copy ends; its file is gone.
    d.read_end(old, 0).unwrap();
    assert_eq!(d.read_begin(old, 1), Err(DeviceError::NoFile));
    set_state(&mut d, Stop).unwrap();
    d.close();
    while complete_one(&mut d) {}
    assert!(d.is_idle());
}

#[test]
fn an_empty_image_is_never_read_as_end_of_stream() {
    // Firmware may report a SAVE of 0 bytes; its record is a header and an
    // empty segment, which a read must step over, not answer with 0 (EOF).
    let mut d = dev();
    let f = set_state(&mut d, StopCopy).unwrap().unwrap();
    let mut r = Reader::new(&mut d);
    assert!(matches!(
        file_ops::read(&mut r, f, 1 << 20, Blocking::Blocking),
        IoOutcome::Done(n) if n > 0
    ));
    let (token, mut out) = r.dev.hal_mut().run_save().unwrap();
    out[8..12].fill(0); // actual_image_size
    r.dev.handle_save_completion(token, &out).unwrap();
    // Exactly the record header: the empty payload is what comes next.
    assert_eq!(
        file_ops::read(&mut r, f, 16, Blocking::Blocking),
        IoOutcome::Done(16)
    );
    let next = file_ops::read(&mut r, f, 1 << 20, Blocking::Blocking);
    assert_ne!(next, IoOutcome::Done(0), "a false end of stream");
}
