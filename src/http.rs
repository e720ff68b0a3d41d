//! Hand-parsed HTTP/1.1 for both sides of the proxy: message heads, body framing and gzip.
//!
//! This module knows HTTP and nothing of Kubernetes. A connection is read through a [`Reader`]
//! (one bounded buffer per connection), heads come out as [`RequestHead`] / [`ResponseHead`],
//! bodies are pulled piece by piece through a [`BodyReader`] and written with a [`BodyWriter`],
//! so nothing ever holds a whole body in memory.
//!
//! ```
//! use yurthub::http::{Reader, Limits};
//! # smol::block_on(async {
//! let wire: &[u8] = b"GET /api/v1/pods HTTP/1.1\r\nHost: x\r\nUser-Agent: kubelet/v1.32\r\n\r\n";
//! let mut reader = Reader::new(wire);
//! let head = reader.read_request_head(&Limits::default()).await.unwrap().unwrap();
//! assert_eq!(head.target, "/api/v1/pods");
//! assert_eq!(head.headers.get_str("user-agent"), Some("kubelet/v1.32"));
//! # });
//! ```

mod body;
pub mod gzip;
mod head;
mod headers;
mod reader;
pub mod url;

pub use body::{BodyError, BodyReader, BodyWriter, Framing};
pub use head::{HeadError, Limits, RequestHead, ResponseHead};
pub use headers::Headers;
pub use reader::Reader;

/// The size of every per-connection buffer, and so the largest message head accepted.
pub const BUFFER_BYTES: usize = 64 * 1024;

/// The reason phrase for the status codes this program writes itself.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}
