//! Protocol upgrades (exec, attach, port-forward over SPDY/3.1 or WebSocket): a connection of
//! their own to the apiserver, then bytes spliced both ways until each side has closed.

use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::RequestContext;
use crate::http::{RequestHead, ResponseHead};
use crate::server::{refuse, ClientConn, Refusal};
use crate::upstream::{Identity, Upstream};

/// The copy buffer of each direction.
const SPLICE_BYTES: usize = 16 * 1024;

/// Copies `leftover` and then everything from `from` to `to`; closes `to` at the end (also on
/// error) so that the other side learns the direction is finished.
async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    leftover: &[u8],
    from: &mut R,
    to: &mut W,
) -> u64 {
    let mut moved = 0u64;
    let mut buf = vec![0u8; SPLICE_BYTES];
    let result: std::io::Result<()> = async {
        if !leftover.is_empty() {
            to.write_all(leftover).await?;
            to.flush().await?;
            moved += leftover.len() as u64;
        }
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            to.write_all(&buf[..n]).await?;
            to.flush().await?;
            moved += n as u64;
        }
    }
    .await;
    if let Err(e) = result {
        log::debug!("tunnel direction ended: {e}");
    }
    let _ = to.close().await;
    moved
}

/// Forwards an upgrade request and, on `101 Switching Protocols`, splices the streams.
/// Any other answer is relayed as it is and the connection closed.
pub(super) async fn run(
    upstream: &Upstream,
    conn: &mut ClientConn,
    head: RequestHead,
    id: Identity,
    ctx: &RequestContext,
) {
    let resp = match upstream.upgrade(&head, id).await {
        Ok(r) => r,
        Err(e) => {
            let e = e.to_string();
            if let Some(more) = super::UNREACHABLE.allow(&e) {
                log::warn!("{e}{more}");
            }
            ctx.log(502, "upgrade: no upstream");
            let _ = refuse(&mut conn.writer, &Refusal::Unreachable(e), true).await;
            return;
        }
    };
    let mut out = Vec::new();
    let mut rhead = ResponseHead::new(resp.head.status);
    rhead.reason = resp.head.reason.clone();
    rhead.headers = resp.head.headers.clone();
    if resp.head.status != 101 {
        // A refusal is relayed de-chunked and ended by the close.
        for name in [
            "transfer-encoding",
            "content-length",
            "connection",
            "keep-alive",
        ] {
            rhead.headers.remove(name);
        }
        rhead.headers.set("Connection", "close");
    }
    rhead.write_to(&mut out);
    if conn.writer.write_all(&out).await.is_err() || conn.writer.flush().await.is_err() {
        return;
    }
    if resp.head.status != 101 {
        // A refusal (400, 403, ...): its body is delimited by the framing or the close.
        let mut body = resp.body;
        let mut up_reader = resp.conn.reader;
        let mut piece = Vec::new();
        while let Ok(n) = body.read(&mut up_reader, &mut piece).await {
            if n == 0 || conn.writer.write_all(&piece).await.is_err() {
                break;
            }
            piece.clear();
        }
        let _ = conn.writer.flush().await;
        ctx.log(resp.head.status, "upgrade refused");
        return;
    }
    ctx.log(101, "tunnel open");
    let (up_stream, up_leftover) = resp.conn.reader.into_parts();
    let (mut up_r, mut up_w) = smol::io::split(up_stream);
    let client_leftover = conn.reader.buffered().to_vec();
    conn.reader.consume(client_leftover.len());
    let client_r = conn.reader.get_mut();
    let (up_bytes, down_bytes) = smol::future::zip(
        pump(&client_leftover, client_r, &mut up_w),
        pump(&up_leftover, &mut up_r, &mut conn.writer),
    )
    .await;
    ctx.log(
        101,
        &format!("tunnel closed after {up_bytes} B up, {down_bytes} B down"),
    );
}
