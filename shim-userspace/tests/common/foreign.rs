//! A driver we did not write, modelled over the simulated device: the
//! traits of the other in-tree VFIO migration drivers issue 15 met, one
//! switch each, so a test can take them one at a time or all together.
//! Its errors are bare errnos, as through a kernel.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mlx5vf::backend::{
    self, DataFile, DriverOptions, MigrationDevice, Stats, errno_of, is_no_message,
};
use mlx5vf_core::save::PrecopyInfo;
use mlx5vf_core::vfio::{MigState, MigrationFlags};

/// What the stream of an opaque [`Foreign`] device starts with.
pub(crate) const MAGIC: &[u8; 16] = b"FOREIGN-STATE-v1";
/// Every byte after the magic is the simulated device's byte XOR this, so
/// nothing in it reads as an mlx5 record.
const XOR: u8 = 0xa5;

const EINVAL: i32 = 22;
const EFAULT: i32 = 14;

/// Which traits the driver has.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Quirks {
    /// RESUMING -> STOP is refused (EINVAL) unless a whole stream arrived:
    /// with no data, or a cut magic, or whatever the inner device refuses.
    /// RESUMING survives closing the data fd (as every driver's does while
    /// the device fd stays open).
    pub(crate) validates: bool,
    /// Its stream is its own format: [`MAGIC`], then scrambled bytes; a
    /// stream without the magic is refused with EFAULT at the first wrong
    /// byte.
    pub(crate) opaque: bool,
    /// Reads complete synchronously: never EAGAIN, and an empty read (not
    /// ENOMSG) at PRE_COPY's temporary end.
    pub(crate) synchronous: bool,
}

/// The resuming session the device judges on leaving RESUMING.
#[derive(Debug, Default)]
struct Resume {
    magic_seen: usize,
    bytes: u64,
}

/// The foreign driver's device.
pub(crate) struct Foreign {
    inner: Box<dyn MigrationDevice>,
    quirks: Quirks,
    resume: Arc<Mutex<Resume>>,
    /// VFIO_DEVICE_RESETs so far.
    pub(crate) resets: Arc<AtomicU32>,
}

impl Foreign {
    /// A simulated device of `spec` behind the driver.
    pub(crate) fn new(spec: &str, quirks: Quirks) -> Self {
        Self {
            inner: backend::open(spec, &DriverOptions::default()).unwrap(),
            quirks,
            resume: Arc::default(),
            resets: Arc::default(),
        }
    }
}

/// An errno as the kernel returns it: no message, no driver error inside.
fn bare(e: io::Error) -> io::Error {
    match errno_of(&e) {
        Some(n) => io::Error::from_raw_os_error(n),
        None => e,
    }
}

struct ForeignFile {
    inner: Box<dyn DataFile>,
    quirks: Quirks,
    pre_copy: bool,
    /// Saving: magic bytes still to hand out.
    magic_left: usize,
    resume: Arc<Mutex<Resume>>,
}

impl Read for ForeignFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.quirks.opaque && self.magic_left > 0 {
            let from = MAGIC.len() - self.magic_left;
            let n = self.magic_left.min(buf.len());
            buf[..n].copy_from_slice(&MAGIC[from..from + n]);
            self.magic_left -= n;
            return Ok(n);
        }
        let n = match self.inner.read(buf) {
            Err(e) if self.quirks.synchronous && self.pre_copy && is_no_message(&e) => 0,
            other => other.map_err(bare)?,
        };
        if self.quirks.opaque {
            buf[..n].iter_mut().for_each(|b| *b ^= XOR);
        }
        Ok(n)
    }
}

impl Write for ForeignFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut resume = self.resume.lock().unwrap();
        if self.quirks.opaque && resume.magic_seen < MAGIC.len() {
            let want = &MAGIC[resume.magic_seen..];
            let good = data.iter().zip(want).take_while(|(a, b)| a == b).count();
            if good == 0 {
                return Err(io::Error::from_raw_os_error(EFAULT));
            }
            resume.magic_seen += good;
            resume.bytes += good as u64;
            return Ok(good);
        }
        let n = if self.quirks.opaque {
            let plain: Vec<u8> = data.iter().map(|b| b ^ XOR).collect();
            self.inner.write(&plain)
        } else {
            self.inner.write(data)
        }
        .map_err(bare)?;
        resume.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl DataFile for ForeignFile {
    fn precopy_info(&mut self) -> io::Result<PrecopyInfo> {
        let info = self.inner.precopy_info().map_err(bare)?;
        Ok(PrecopyInfo {
            // The magic is initial data too.
            initial_bytes: info.initial_bytes + self.magic_left as u64,
            ..info
        })
    }
    fn wait_readable(&mut self, timeout: Duration) -> io::Result<bool> {
        if self.quirks.synchronous {
            return Ok(true);
        }
        self.inner.wait_readable(timeout).map_err(bare)
    }
    fn set_nonblocking(&mut self, on: bool) -> io::Result<()> {
        // A synchronous read path completes every read in the call.
        if self.quirks.synchronous {
            return Ok(());
        }
        self.inner.set_nonblocking(on)
    }
}

impl MigrationDevice for Foreign {
    fn describe(&self) -> String {
        format!("foreign({:?})", self.quirks)
    }
    fn migration_flags(&self) -> MigrationFlags {
        self.inner.migration_flags()
    }
    fn state(&mut self) -> io::Result<MigState> {
        self.inner.state().map_err(bare)
    }
    fn set_state(&mut self, target: MigState) -> io::Result<Option<Box<dyn DataFile>>> {
        let from = self.inner.state().map_err(bare)?;
        if self.quirks.validates && from == MigState::Resuming && target != MigState::Resuming {
            let r = self.resume.lock().unwrap();
            let whole_magic = !self.quirks.opaque || r.magic_seen == MAGIC.len();
            if r.bytes == 0 || !whole_magic {
                return Err(io::Error::from_raw_os_error(EINVAL));
            }
        }
        let file = self.inner.set_state(target).map_err(bare)?;
        Ok(file.map(|inner| {
            let saving = target != MigState::Resuming;
            if !saving {
                *self.resume.lock().unwrap() = Resume::default();
            }
            Box::new(ForeignFile {
                inner,
                quirks: self.quirks,
                pre_copy: target == MigState::PreCopy,
                magic_left: if saving && self.quirks.opaque {
                    MAGIC.len()
                } else {
                    0
                },
                resume: Arc::clone(&self.resume),
            }) as Box<dyn DataFile>
        }))
    }
    fn data_size(&mut self) -> io::Result<u64> {
        self.inner.data_size().map_err(bare)
    }
    fn reset(&mut self) -> io::Result<()> {
        self.resets.fetch_add(1, Ordering::SeqCst);
        self.inner.reset().map_err(bare)
    }
    fn digest(&self) -> Option<String> {
        self.inner.digest()
    }
    fn stats(&self) -> Stats {
        Stats::default()
    }
}
