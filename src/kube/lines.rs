//! Watch streams are one JSON event per line; the hub splits them in three places (the
//! cache's copy, the filtered relay, its own informers). This is the one splitter: it keeps
//! the unfinished line, scans each byte for a newline once however the stream is cut, and
//! bounds the unfinished line, so an endless line from a broken server costs `max` bytes.
//!
//! ```
//! use yurthub::kube::Lines;
//! let mut lines = Lines::new(1024);
//! let mut seen = Vec::new();
//! for piece in [&b"{\"a\":"[..], b"1}\n\n{\"b\"", b":2}\n"] {
//!     lines.push(piece, |l| seen.push(l.to_vec())).unwrap();
//! }
//! assert_eq!(seen, [b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]);
//! ```

use std::fmt;

/// An unfinished line grew past the limit.
#[derive(Debug, PartialEq, Eq)]
pub struct LineTooLong(pub usize);

impl fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a watch event is larger than {} bytes", self.0)
    }
}

impl std::error::Error for LineTooLong {}

/// A stream being split into lines.
pub struct Lines {
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no newline.
    scanned: usize,
    max: usize,
}

impl Lines {
    /// A splitter whose unfinished line may grow to `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            scanned: 0,
            max,
        }
    }

    /// Takes the next bytes and calls `each` with every complete line that is not blank,
    /// without its newline. Fails (dropping the unfinished line) when that line is longer
    /// than the limit.
    pub fn push(&mut self, data: &[u8], mut each: impl FnMut(&[u8])) -> Result<(), LineTooLong> {
        self.buf.extend_from_slice(data);
        let (mut start, mut from) = (0, self.scanned);
        while let Some(p) = self.buf[from..].iter().position(|&b| b == b'\n') {
            let line = &self.buf[start..from + p];
            if !line.trim_ascii().is_empty() {
                each(line);
            }
            start = from + p + 1;
            from = start;
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        if self.buf.len() > self.max {
            self.buf = Vec::new();
            self.scanned = 0;
            return Err(LineTooLong(self.max));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_in_any_piece_size_and_the_limit() {
        let stream = b"{\"a\":1}\r\n \n{\"b\":2}\n{\"c\":3}\n";
        for size in 1..stream.len() {
            let mut lines = Lines::new(64);
            let mut seen = Vec::new();
            for piece in stream.chunks(size) {
                lines.push(piece, |l| seen.push(l.to_vec())).unwrap();
            }
            assert_eq!(seen.len(), 3, "piece size {size}");
            assert_eq!(seen[0], b"{\"a\":1}\r");
        }
        let mut lines = Lines::new(4);
        assert_eq!(lines.push(b"12345", |_| {}), Err(LineTooLong(4)));
        let mut seen = 0;
        lines.push(b"ok\n", |_| seen += 1).unwrap();
        assert_eq!(seen, 1, "the long line was dropped, the next one counts");
    }
}
