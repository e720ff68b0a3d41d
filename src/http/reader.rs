//! The per-connection read buffer every parser of this module reads through.

use smol::io::{AsyncRead, AsyncReadExt};
use std::io;

use super::BUFFER_BYTES;

/// The buffer a connection starts with: a kubelet request head fits, and 2,000 idle
/// connections cost 4 MiB, not the 125 MiB of full-size buffers.
const INITIAL_BYTES: usize = 2048;

/// A bounded read buffer over a byte stream. It starts small and grows (doubling) up to its
/// capacity only when a head or chunk line needs the room.
///
/// Every read method is cancel-safe: bytes are appended to the buffer only once the underlying
/// read completes, so dropping a pending future (for example when a client disconnect wins a
/// race against an upstream read) loses nothing.
pub struct Reader<R> {
    inner: R,
    buf: Vec<u8>,
    capacity: usize,
    start: usize,
    end: usize,
}

impl<R> Reader<R> {
    /// Wraps `inner` with a buffer of up to [`BUFFER_BYTES`].
    pub fn new(inner: R) -> Self {
        Self::with_capacity(inner, BUFFER_BYTES)
    }

    /// Wraps `inner` with a buffer of up to `capacity` bytes.
    pub fn with_capacity(inner: R, capacity: usize) -> Self {
        Self::sized(inner, INITIAL_BYTES, capacity)
    }

    /// Wraps `inner` with a buffer of `initial` bytes, growing to up to `capacity`: for the
    /// few connections where whole bodies stream through, so that a body takes few reads.
    pub fn sized(inner: R, initial: usize, capacity: usize) -> Self {
        Self {
            inner,
            buf: vec![0; initial.min(capacity)],
            capacity,
            start: 0,
            end: 0,
        }
    }

    /// The bytes read but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks `n` buffered bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Whether the buffer holds as much as it can.
    pub fn is_full(&self) -> bool {
        self.end - self.start >= self.capacity
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The wrapped stream, mutably. Reading from it directly skips the buffered bytes.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Gives back the stream and whatever was buffered but not consumed.
    pub fn into_parts(self) -> (R, Vec<u8>) {
        let rest = self.buf[self.start..self.end].to_vec();
        (self.inner, rest)
    }
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Reads more bytes into the buffer; returns how many (0 at end of stream).
    ///
    /// Fails with [`io::ErrorKind::OutOfMemory`] when the buffer is already full.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.is_full() {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "read buffer full",
            ));
        }
        if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let grown = (self.buf.len() * 2).max(INITIAL_BYTES).min(self.capacity);
            self.buf.resize(grown, 0);
        }
        let n = self.inner.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// Waits until the peer closes its side, keeping whatever it sends meanwhile (a pipelined
    /// request) for later. Returns when the stream ends or fails; pends forever once the
    /// buffer is full, since nothing more can be learned without consuming.
    pub async fn closed(&mut self) {
        loop {
            if self.is_full() {
                return std::future::pending().await;
            }
            match self.fill().await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// Copies up to `out.len()` bytes, buffered ones first; 0 at end of stream.
    pub async fn read_some(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.start == self.end {
            return self.inner.read(out).await;
        }
        let n = out.len().min(self.end - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_small_grows_to_its_capacity_and_no_further() {
        let data = vec![b'x'; 10_000];
        let mut r = Reader::with_capacity(&data[..], 5000);
        assert_eq!(r.buf.len(), INITIAL_BYTES);
        smol::block_on(async {
            while !r.is_full() {
                assert!(r.fill().await.unwrap() > 0);
            }
            assert_eq!(r.buffered().len(), 5000);
            assert_eq!(r.buf.len(), 5000);
            let e = r.fill().await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::OutOfMemory);
            // Consumed room is reused without growing.
            r.consume(3000);
            assert!(r.fill().await.unwrap() > 0);
            assert_eq!(r.buf.len(), 5000);
        });
    }
}
