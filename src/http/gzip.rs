//! Streaming gzip decoding (RFC 1952): the member framing and CRC-32 here, the deflate
//! stream by miniz_oxide.
//!
//! The apiserver compresses responses over 128 KiB when asked; the hub asks, and unpacks for
//! clients that did not. Output is produced in bounded pieces, so a small hostile input cannot
//! make one call allocate without limit.
//!
//! ```
//! use yurthub::http::gzip::GzipDecoder;
//! // "hi\n" compressed by gzip(1).
//! let member = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xcb, 0xc8, 0xe4, 2, 0,
//!               0x7a, 0x7a, 0x6f, 0xed, 3, 0, 0, 0];
//! let mut dec = GzipDecoder::new();
//! let mut out = Vec::new();
//! let used = dec.decode(&member, &mut out, 1024).unwrap();
//! assert_eq!((used, out.as_slice()), (member.len(), &b"hi\n"[..]));
//! assert!(dec.is_done());
//! ```

use miniz_oxide::inflate::stream::{inflate, InflateState};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};
use std::fmt;

/// The largest gzip header (with its optional name, comment and extra fields) accepted.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// The scratch space one inflate step writes into.
const STEP_BYTES: usize = 32 * 1024;

const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// The CRC-32 of ISO 3309 / ITU-T V.42, as gzip uses it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Crc32(u32);

impl Crc32 {
    /// Feeds `data` into the checksum.
    pub fn update(&mut self, data: &[u8]) {
        let mut c = !self.0;
        for &b in data {
            c = CRC_TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
        }
        self.0 = !c;
    }

    /// The checksum of everything fed so far.
    pub fn value(&self) -> u32 {
        self.0
    }
}

/// Why a gzip stream could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum GzipError {
    /// The member does not start with the gzip magic and deflate method.
    BadHeader,
    /// The deflate data is corrupt.
    BadData,
    /// The CRC-32 or length in the trailer does not match the data.
    BadTrailer,
    /// The stream ended inside a member.
    Truncated,
}

impl fmt::Display for GzipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GzipError::BadHeader => "gzip: invalid header",
            GzipError::BadData => "gzip: corrupt deflate data",
            GzipError::BadTrailer => "gzip: checksum or length mismatch",
            GzipError::Truncated => "gzip: unexpected end of stream",
        })
    }
}

impl std::error::Error for GzipError {}

enum Phase {
    Header,
    Body,
    Trailer,
    Done,
}

/// An incremental gzip decoder; feed it the compressed bytes in order.
pub struct GzipDecoder {
    phase: Phase,
    inflater: Box<InflateState>,
    pending: Vec<u8>,
    crc: Crc32,
    size: u32,
    scratch: Box<[u8]>,
    total_in: u64,
    total_out: u64,
}

impl Default for GzipDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// The length of a complete header at the front of `buf`, `None` when more bytes are needed.
fn header_len(buf: &[u8]) -> Result<Option<usize>, GzipError> {
    if buf.len() >= 3 && (buf[0] != 0x1f || buf[1] != 0x8b || buf[2] != 8) {
        return Err(GzipError::BadHeader);
    }
    if buf.len() < 10 {
        return Ok(None);
    }
    let flags = buf[3];
    if flags & 0xe0 != 0 {
        return Err(GzipError::BadHeader);
    }
    let mut pos = 10;
    if flags & FEXTRA != 0 {
        if buf.len() < pos + 2 {
            return Ok(None);
        }
        pos += 2 + u16::from_le_bytes([buf[pos], buf[pos + 1]]) as usize;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            match buf
                .get(pos..)
                .and_then(|rest| rest.iter().position(|&b| b == 0))
            {
                Some(nul) => pos += nul + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & FHCRC != 0 {
        pos += 2;
    }
    Ok(if buf.len() >= pos { Some(pos) } else { None })
}

/// The most plain bytes [`GzipDecoder::step`] unpacks at once: a few KiB of gzip can stand for
/// many MiB (a bomb), so a body is unpacked a step at a time, each step used before the next.
pub const STEP: usize = 64 * 1024;

impl GzipDecoder {
    /// Unpacks the next step of `input`, from `*pos` on, into `out` (cleared first): at most
    /// about [`STEP`] bytes. `Ok(false)` when there is nothing more to take from `input`.
    ///
    /// ```
    /// # use yurthub::http::gzip::GzipDecoder;
    /// let body = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    /// let (mut gz, mut pos, mut plain) = (GzipDecoder::new(), 0, Vec::new());
    /// while gz.step(&body, &mut pos, &mut plain).unwrap() {
    ///     // relay `plain` before the next step
    /// }
    /// assert!(gz.finish().is_ok());
    /// ```
    pub fn step(
        &mut self,
        input: &[u8],
        pos: &mut usize,
        out: &mut Vec<u8>,
    ) -> Result<bool, GzipError> {
        out.clear();
        let used = self.decode(&input[*pos..], out, STEP)?;
        *pos += used;
        Ok(!(out.is_empty() && (used == 0 || *pos >= input.len())))
    }

    /// A decoder at the start of a gzip stream.
    pub fn new() -> Self {
        Self {
            phase: Phase::Header,
            inflater: InflateState::new_boxed(DataFormat::Raw),
            pending: Vec::new(),
            crc: Crc32::default(),
            size: 0,
            scratch: vec![0; STEP_BYTES].into_boxed_slice(),
            total_in: 0,
            total_out: 0,
        }
    }

    /// Whether the last member ended with a valid trailer and nothing is half-read.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Checks that the stream ended on a member boundary.
    pub fn finish(&self) -> Result<(), GzipError> {
        if self.is_done() {
            Ok(())
        } else {
            Err(GzipError::Truncated)
        }
    }

    /// Compressed bytes used and plain bytes produced so far.
    pub fn totals(&self) -> (u64, u64) {
        (self.total_in, self.total_out)
    }

    /// Decodes from `input`, appending at most about `max_out` bytes to `out`; returns how
    /// many input bytes were used. Call again with the rest until all input is used: a return
    /// smaller than `input.len()` means the output limit was reached.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max_out: usize,
    ) -> Result<usize, GzipError> {
        let before = out.len();
        let r = self.decode_step(input, out, max_out);
        self.total_out += (out.len() - before) as u64;
        if let Ok(used) = r {
            self.total_in += used as u64;
        }
        r
    }

    fn decode_step(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max_out: usize,
    ) -> Result<usize, GzipError> {
        let mut used = 0;
        let start_len = out.len();
        loop {
            let rest = &input[used..];
            match self.phase {
                Phase::Done => {
                    if rest.is_empty() {
                        return Ok(used);
                    }
                    // Another member follows (RFC 1952 §2.2 allows several).
                    self.phase = Phase::Header;
                    self.inflater.reset(DataFormat::Raw);
                    self.crc = Crc32::default();
                    self.size = 0;
                }
                Phase::Header => {
                    if rest.is_empty() {
                        return Ok(used);
                    }
                    let before = self.pending.len();
                    let take = rest.len().min(MAX_HEADER_BYTES + 1 - before);
                    self.pending.extend_from_slice(&rest[..take]);
                    match header_len(&self.pending)? {
                        Some(n) => {
                            used += n - before;
                            self.pending.clear();
                            self.phase = Phase::Body;
                        }
                        None if self.pending.len() > MAX_HEADER_BYTES => {
                            return Err(GzipError::BadHeader)
                        }
                        None => return Ok(used + take),
                    }
                }
                Phase::Body => {
                    if out.len() - start_len >= max_out {
                        return Ok(used);
                    }
                    let r = inflate(&mut self.inflater, rest, &mut self.scratch, MZFlush::None);
                    let produced = &self.scratch[..r.bytes_written];
                    self.crc.update(produced);
                    self.size = self.size.wrapping_add(r.bytes_written as u32);
                    out.extend_from_slice(produced);
                    used += r.bytes_consumed;
                    match r.status {
                        Ok(MZStatus::StreamEnd) => self.phase = Phase::Trailer,
                        Ok(_) => {}
                        Err(MZError::Buf) => {}
                        Err(_) => return Err(GzipError::BadData),
                    }
                    if r.bytes_consumed == 0
                        && r.bytes_written == 0
                        && !matches!(self.phase, Phase::Trailer)
                    {
                        return Ok(used);
                    }
                }
                Phase::Trailer => {
                    let take = rest.len().min(8 - self.pending.len());
                    self.pending.extend_from_slice(&rest[..take]);
                    used += take;
                    if self.pending.len() < 8 {
                        return Ok(used);
                    }
                    let crc = u32::from_le_bytes([
                        self.pending[0],
                        self.pending[1],
                        self.pending[2],
                        self.pending[3],
                    ]);
                    let size = u32::from_le_bytes([
                        self.pending[4],
                        self.pending[5],
                        self.pending[6],
                        self.pending[7],
                    ]);
                    self.pending.clear();
                    if crc != self.crc.value() || size != self.size {
                        return Err(GzipError::BadTrailer);
                    }
                    self.phase = Phase::Done;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gzip member built by hand around miniz_oxide's deflate, with a name field.
    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut out = vec![0x1f, 0x8b, 8, FNAME, 0, 0, 0, 0, 0, 3];
        out.extend_from_slice(b"name.json\0");
        out.extend(miniz_oxide::deflate::compress_to_vec(data, 6));
        let mut crc = Crc32::default();
        crc.update(data);
        out.extend_from_slice(&crc.value().to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    fn decode_in_pieces(wire: &[u8], piece: usize) -> Result<Vec<u8>, GzipError> {
        let mut dec = GzipDecoder::new();
        let mut out = Vec::new();
        for chunk in wire.chunks(piece) {
            let mut pos = 0;
            loop {
                pos += dec.decode(&chunk[pos..], &mut out, 1000)?;
                if pos == chunk.len() {
                    break;
                }
            }
        }
        dec.finish()?;
        Ok(out)
    }

    #[test]
    fn crc_of_check_string() {
        let mut c = Crc32::default();
        c.update(b"123456789");
        assert_eq!(c.value(), 0xCBF4_3926);
    }

    #[test]
    fn decodes_in_any_piece_size_and_multiple_members() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut wire = gzip(&data);
        wire.extend(gzip(b"tail"));
        for piece in [1, 7, 4096, wire.len()] {
            let out = decode_in_pieces(&wire, piece).unwrap();
            assert_eq!(out.len(), data.len() + 4);
            assert_eq!(&out[..data.len()], &data[..]);
        }
    }

    #[test]
    fn rejects_corruption() {
        let wire = gzip(b"hello hello hello");
        let mut bad_crc = wire.clone();
        let n = bad_crc.len();
        bad_crc[n - 6] ^= 1;
        assert_eq!(decode_in_pieces(&bad_crc, 5), Err(GzipError::BadTrailer));
        assert_eq!(
            decode_in_pieces(&wire[..wire.len() - 3], 5),
            Err(GzipError::Truncated)
        );
        assert_eq!(
            decode_in_pieces(b"plain text", 5),
            Err(GzipError::BadHeader)
        );
        let mut bad_data = wire.clone();
        bad_data[20] = 0xff;
        bad_data[21] = 0xff;
        assert!(decode_in_pieces(&bad_data, 5).is_err());
    }
}
