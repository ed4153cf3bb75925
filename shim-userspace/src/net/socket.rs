//! A connected TCP socket whose waits end: on a signal (the transfer's
//! [`Interrupt`]), after the I/O timeout without progress, or at a deadline
//! (a handshake's).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rustix::event::PollFlags;

use super::seconds;
use crate::interrupt::{Interrupt, Ready};

/// A connected stream socket with bounded waits. Reads and writes first
/// wait for the descriptor; a wait that passes the I/O timeout or the
/// deadline fails with [`io::ErrorKind::TimedOut`] naming the peer.
#[derive(Debug)]
pub(crate) struct Socket {
    stream: TcpStream,
    peer: SocketAddr,
    interrupt: Interrupt,
    io_timeout: Duration,
    /// The end of the current phase (a handshake); `None` between them.
    deadline: Option<Instant>,
}

impl Socket {
    /// `stream` (blocking, no Nagle delay: the stream's last bytes must not
    /// wait for an ACK).
    pub(crate) fn new(
        stream: TcpStream,
        interrupt: Interrupt,
        io_timeout: Duration,
    ) -> io::Result<Self> {
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        let peer = stream.peer_addr()?;
        Ok(Self {
            stream,
            peer,
            interrupt,
            io_timeout,
            deadline: None,
        })
    }

    /// The peer's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether a signal asked the transfer to stop.
    #[cfg(feature = "tls")] // the handshake only
    pub(crate) fn interrupted(&self) -> bool {
        self.interrupt.signal().is_some()
    }

    /// Bounds every wait until [`Socket::clear_deadline`] by `deadline`.
    #[cfg(feature = "tls")] // the handshake only
    pub(crate) fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }

    /// Back to the I/O timeout alone.
    #[cfg(feature = "tls")] // the handshake only
    pub(crate) fn clear_deadline(&mut self) {
        self.deadline = None;
    }

    /// Copies the first bytes the peer sent without consuming them; 0 when
    /// it closed without sending any.
    #[cfg(feature = "tls")] // the handshake only
    pub(crate) fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.wait(PollFlags::IN)?;
        self.stream.peek(buf)
    }

    /// Ends the sending direction (TCP FIN): the peer reads end of stream.
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }

    /// Makes the coming close a reset (RST) instead of an orderly FIN, so
    /// the peer cannot mistake an abandoned stream for a complete one.
    pub(crate) fn abort_on_close(&self) {
        // Best effort: if it fails, the close is an ordinary FIN, which a
        // TLS peer still tells from close_notify and an mlx5 loader from a
        // stream with its end record.
        let _ = rustix::net::sockopt::set_socket_linger(&self.stream, Some(Duration::ZERO));
    }

    fn wait(&self, flags: PollFlags) -> io::Result<()> {
        let idle_end = Instant::now() + self.io_timeout;
        let deadline = self.deadline.map_or(idle_end, |d| d.min(idle_end));
        match self
            .interrupt
            .wait_until(&self.stream, flags, Some(deadline))?
        {
            Ready::Yes => Ok(()),
            Ready::DeadlinePassed => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                match (self.deadline, flags == PollFlags::IN) {
                    (Some(d), _) if d <= idle_end => {
                        format!("{} did not finish the TLS handshake in time", self.peer)
                    }
                    (_, true) => format!(
                        "no data from {} for {} (the I/O timeout)",
                        self.peer,
                        seconds(self.io_timeout)
                    ),
                    (_, false) => format!(
                        "{} took no data for {} (the I/O timeout)",
                        self.peer,
                        seconds(self.io_timeout)
                    ),
                },
            )),
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.wait(PollFlags::IN)?;
        self.stream.read(buf)
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.wait(PollFlags::OUT)?;
        self.stream.write(buf)
    }

    /// rustls hands over its queued records at once; the default would
    /// send only the first (and an alert queued behind a record would wait
    /// for a write that never comes).
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.wait(PollFlags::OUT)?;
        self.stream.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}
