//! Stopping a transfer on SIGINT, SIGTERM or SIGHUP without leaving a device
//! mid-session.
//!
//! A signal only raises a flag ([`Interrupt`]); the transfer sees it between
//! chunks, stops, and takes the same way out as any other failure (a
//! resuming device is reset, a saving device goes back to the state it was
//! in). Waits that could last forever (an input or output that stalls) are
//! cut into short polls so the flag is seen there too ([`Interruptible`]). A
//! second signal ends the process at once, for when the way out itself
//! hangs; the next `load` or `save` then finds the device mid-session and
//! recovers it first ([`crate::transfer::settle`]).

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::transfer::{Observer, Phase};

/// How often a stalled input or output looks at the flag.
const POLL_SLICE: Duration = Duration::from_millis(100);
/// The signals that stop a transfer.
const STOP_SIGNALS: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

/// A request to stop, raised by a signal or by [`Interrupt::raise`].
#[derive(Clone, Debug, Default)]
pub struct Interrupt {
    /// Set by the first signal; a second one, seeing it set, exits.
    raised: Arc<AtomicBool>,
    /// The signal's number (0: none).
    signal: Arc<AtomicUsize>,
}

impl Interrupt {
    /// A request no signal raises (tests and embedders raise it themselves).
    pub fn new() -> Self {
        Self::default()
    }

    /// A request raised by SIGINT, SIGTERM or SIGHUP; a second such signal
    /// ends the process with status 1.
    ///
    /// # Errors
    /// The handlers could not be installed.
    pub fn on_signals() -> io::Result<Self> {
        let this = Self::new();
        for sig in STOP_SIGNALS {
            // Registered first, so it sees the flag as the previous signal
            // left it: exits only on the second signal.
            signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&this.raised))?;
            // CAST: signal numbers are small and positive.
            signal_hook::flag::register_usize(sig, Arc::clone(&this.signal), sig as usize)?;
            signal_hook::flag::register(sig, Arc::clone(&this.raised))?;
        }
        Ok(this)
    }

    /// Raises the request as if `signal` had arrived.
    pub fn raise(&self, signal: i32) {
        // CAST: a negative number would be no signal; keep it visible as one.
        self.signal.store(
            usize::try_from(signal).unwrap_or(usize::MAX),
            Ordering::SeqCst,
        );
        self.raised.store(true, Ordering::SeqCst);
    }

    /// The signal that raised the request, if one did.
    pub fn signal(&self) -> Option<i32> {
        if !self.raised.load(Ordering::SeqCst) {
            return None;
        }
        Some(i32::try_from(self.signal.load(Ordering::SeqCst)).unwrap_or(0))
    }

    /// The error a cut wait returns. Not [`io::ErrorKind::Interrupted`]:
    /// `write_all` and friends retry that kind, forever here.
    fn error(&self) -> io::Error {
        io::Error::other(format!(
            "interrupted by {}",
            signal_name(self.signal().unwrap_or(0))
        ))
    }

    /// Waits until `fd` is ready for `flags` or the request is raised.
    fn wait(&self, fd: impl AsFd, flags: PollFlags) -> io::Result<()> {
        match self.wait_until(fd, flags, None)? {
            Ready::Yes => Ok(()),
            // Without a deadline the wait ends only when ready or raised.
            Ready::DeadlinePassed => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// Waits until `fd` is ready for `flags`, the request is raised (an
    /// error naming the signal) or `deadline` passes
    /// ([`Ready::DeadlinePassed`]; the caller names what it waited for).
    ///
    /// # Errors
    /// The request was raised, or `poll()` failed.
    pub(crate) fn wait_until(
        &self,
        fd: impl AsFd,
        flags: PollFlags,
        deadline: Option<Instant>,
    ) -> io::Result<Ready> {
        loop {
            if self.signal().is_some() {
                return Err(self.error());
            }
            let mut slice = POLL_SLICE;
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(Ready::DeadlinePassed);
                }
                slice = slice.min(left);
            }
            let timeout = Timespec {
                tv_sec: 0,
                // CAST: at most 100 ms in nanoseconds, which fits an i64.
                tv_nsec: slice.as_nanos() as i64,
            };
            let mut fds = [PollFd::new(&fd, flags)];
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(0) => {}
                Ok(_) => return Ok(Ready::Yes),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Observer for Interrupt {
    fn progress(&self, _total: u64, _phase: Phase) {}

    fn interrupted_by(&self) -> Option<i32> {
        self.signal()
    }
}

/// How a [`Interrupt::wait_until`] ended without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ready {
    /// The descriptor is ready.
    Yes,
    /// The deadline passed first.
    DeadlinePassed,
}

/// The name of a signal for messages (`SIGINT`), or its number.
pub fn signal_name(signal: i32) -> String {
    match signal {
        SIGINT => "SIGINT".to_owned(),
        SIGTERM => "SIGTERM".to_owned(),
        SIGHUP => "SIGHUP".to_owned(),
        n => format!("signal {n}"),
    }
}

/// An input or output whose waits end when the request is raised: each
/// read or write first polls the descriptor in short slices, looking at the
/// flag in between. (The handlers restart interrupted system calls, so a
/// plain blocking read would not notice the signal.)
pub struct Interruptible<T> {
    inner: T,
    interrupt: Interrupt,
}

impl<T> Interruptible<T> {
    /// `inner`, stopping when `interrupt` is raised.
    pub fn new(inner: T, interrupt: Interrupt) -> Self {
        Self { inner, interrupt }
    }
}

impl<T: Read + AsFd> Read for Interruptible<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.interrupt.wait(&self.inner, PollFlags::IN)?;
        self.inner.read(buf)
    }
}

impl<T: Write + AsFd> Write for Interruptible<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.interrupt.wait(&self.inner, PollFlags::OUT)?;
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// A read that would wait forever (nobody writes) ends once the request
    /// is raised, with the signal named.
    #[test]
    fn a_stalled_read_ends_when_raised() {
        let (a, _b) = UnixStream::pair().unwrap();
        let interrupt = Interrupt::new();
        let mut r = Interruptible::new(a, interrupt.clone());
        let raiser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            interrupt.raise(SIGTERM);
        });
        let e = r.read(&mut [0u8; 8]).unwrap_err();
        raiser.join().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::Other);
        assert_eq!(e.to_string(), "interrupted by SIGTERM");
    }

    #[test]
    fn data_passes_while_not_raised() {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"abc").unwrap();
        let mut r = Interruptible::new(a, Interrupt::new());
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
    }
}
