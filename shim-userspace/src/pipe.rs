//! A bounded in-process pipe: what connects the saving and the loading side
//! of `mlx5vf migrate`, as a socket with a small buffer would.
//!
//! Bytes travel in chunks of `chunk` bytes, at most `depth` chunks in flight;
//! chunk buffers are recycled, so a migration allocates `depth + 2` of them in
//! all. The writer blocks while the pipe is full, the reader while it is
//! empty; dropping the writer is end of stream, dropping the reader makes
//! writes fail with `BrokenPipe`. The reader is a [`BufRead`], so a consumer
//! can write the bytes on without copying them again.
//!
//! Why not a crate: `pipe` (0.4, last released 2021) hands each write over
//! as a fresh `Vec` through a rendezvous channel, so it has no depth to model
//! a socket buffer and allocates per write; OS pipes (`os_pipe`; std's
//! `io::pipe` needs Rust 1.87) copy every byte through the kernel, in
//! buffers of 64 KiB to 1 MiB, on the path `migrate` measures.

use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// The writing end.
pub struct PipeWriter {
    tx: Option<SyncSender<Vec<u8>>>,
    spare: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    chunk: usize,
}

/// The reading end.
pub struct PipeReader {
    rx: Receiver<Vec<u8>>,
    recycle: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    at: usize,
}

/// A pipe of at most `depth` chunks of `chunk` bytes.
pub fn pipe(chunk: usize, depth: usize) -> (PipeWriter, PipeReader) {
    let (tx, rx) = sync_channel(depth.max(1));
    let (recycle, spare) = sync_channel(depth.saturating_add(2));
    (
        PipeWriter {
            tx: Some(tx),
            spare,
            cur: Vec::with_capacity(chunk),
            chunk: chunk.max(1),
        },
        PipeReader {
            rx,
            recycle,
            cur: Vec::new(),
            at: 0,
        },
    )
}

impl PipeWriter {
    fn send_current(&mut self) -> io::Result<()> {
        if self.cur.is_empty() {
            return Ok(());
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.chunk));
        let full = std::mem::replace(&mut self.cur, next);
        let tx = self.tx.as_ref().ok_or(io::ErrorKind::BrokenPipe)?;
        tx.send(full).map_err(|_| io::ErrorKind::BrokenPipe.into())
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.chunk.saturating_sub(self.cur.len());
        let n = room.min(data.len());
        self.cur
            .extend_from_slice(data.get(..n).unwrap_or_default());
        if self.cur.len() >= self.chunk {
            self.send_current()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_current()
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        // The reader sees end of stream after the last bytes; if it is gone,
        // there is no one to tell.
        let _ = self.send_current();
        self.tx = None;
    }
}

impl BufRead for PipeReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.at >= self.cur.len() {
            let mut used = match self.rx.recv() {
                Ok(next) => std::mem::replace(&mut self.cur, next),
                // Writer gone: end of stream.
                Err(_) => std::mem::take(&mut self.cur),
            };
            self.at = 0;
            used.clear();
            if used.capacity() > 0 {
                let _ = self.recycle.try_send(used);
            }
        }
        Ok(self.cur.get(self.at..).unwrap_or_default())
    }

    fn consume(&mut self, amt: usize) {
        self.at = self.at.saturating_add(amt).min(self.cur.len());
    }
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let chunk = self.fill_buf()?;
        let n = chunk.len().min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), chunk.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_arrive_in_order_and_end_on_drop() {
        let (mut w, mut r) = pipe(7, 2);
        let t = std::thread::spawn(move || {
            for i in 0..1000u32 {
                w.write_all(&i.to_le_bytes()).unwrap();
            }
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        t.join().unwrap();
        let want: Vec<u8> = (0..1000u32).flat_map(|i| i.to_le_bytes()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn writes_fail_once_the_reader_is_gone() {
        let (mut w, r) = pipe(4, 1);
        drop(r);
        let e = w.write_all(&[0; 64]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }
}
