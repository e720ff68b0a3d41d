//! The relay of responses a filter rewrites: lists stream item by item through
//! [`ListStream`] (the hub holds one item, never the list); get bodies are read whole
//! (bounded), filtered and sent with their new length; watch streams are filtered event by
//! event and each event is flushed at once. The cache's copy is the filtered body.

use smol::io::AsyncWriteExt;

use super::{Outcome, RequestContext, Tee};
use crate::filter::{Chain, ListStream};
use crate::http::gzip::GzipDecoder;
use crate::http::{BodyWriter, Framing};
use crate::kube::Lines;
use crate::server::ClientConn;
use crate::upstream::Response;

/// The largest get body filtered; a larger one ends the connection.
const MAX_FILTERED_BYTES: usize = 64 * 1024 * 1024;
/// The largest single list item or watch event filtered (etcd stores objects of at most
/// ~1.5 MiB).
const MAX_FILTERED_ITEM: usize = 8 * 1024 * 1024;

pub(super) struct Filtered<'a> {
    pub chain: Chain,
    pub watch: bool,
    pub tee: Option<Tee>,
    pub ctx: &'a RequestContext,
}

fn chunk_into(writer: BodyWriter, data: &[u8], out: &mut Vec<u8>) {
    writer.encode(data, out);
}

impl Filtered<'_> {
    /// Streams `resp` through the chain to the client.
    pub(super) async fn relay(
        mut self,
        proxy: &super::Proxy,
        conn: &mut ClientConn,
        mut resp: Response,
    ) -> Outcome {
        let method = self.ctx.method.as_str();
        let up_framing = Framing::of_response(&resp.head, method).unwrap_or(Framing::Close);
        let mut gunzip =
            (resp.head.is_gzip() && up_framing != Framing::Empty).then(GzipDecoder::new);
        let mut head = resp.head.relayed(true);
        let mut list = (!self.watch && self.ctx.info.verb == "list" && method != "HEAD")
            .then(|| ListStream::new(MAX_FILTERED_ITEM));
        let streamed = self.watch || list.is_some();
        let writer = if streamed {
            BodyWriter::streaming(&mut head, self.ctx.http10)
        } else {
            BodyWriter::Raw
        };
        let mut out = Vec::new();
        let mut filtered = Vec::new();
        if streamed {
            if self.ctx.http10 {
                head.headers.set("Connection", "close");
            }
            head.write_to(&mut out);
            if conn.writer.write_all(&out).await.is_err() || conn.writer.flush().await.is_err() {
                return Outcome::Close;
            }
        }
        let mut piece = Vec::new();
        let mut plain = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut watch_lines = self.watch.then(|| Lines::new(MAX_FILTERED_ITEM));
        let mut gzip_saved = 0;
        loop {
            piece.clear();
            let next = proxy.next_piece(conn, &mut resp, &mut piece).await;
            let n = match next {
                None | Some(Err(_)) => {
                    self.ctx.log(resp.head.status, "filtered relay ended early");
                    return Outcome::Close;
                }
                Some(Ok(n)) => n,
            };
            if let (Some(l), Some(_)) = (&self.ctx.labels, &self.ctx.component) {
                proxy
                    .metrics
                    .add_traffic(l, self.ctx.node_identity, n as u64);
            }
            // A gzip piece is unpacked a bounded step at a time: a few KiB can stand for
            // many MiB (a bomb), and each step is relayed before the next is unpacked.
            let (mut pos, mut taken) = (0, false);
            loop {
                let data: &[u8] = match &mut gunzip {
                    None if taken => break,
                    None => {
                        taken = true;
                        &piece
                    }
                    Some(gz) => match gz.step(&piece, &mut pos, &mut plain) {
                        Ok(true) => &plain,
                        Ok(false) => break,
                        Err(e) => {
                            log::warn!("upstream gzip body: {e}");
                            return Outcome::Close;
                        }
                    },
                };
                if let Some(lines) = &mut watch_lines {
                    out.clear();
                    let (chain, tee) = (&self.chain, &mut self.tee);
                    let split = lines.push(data, |line| {
                        let filtered = chain.apply_event(line);
                        if let Some(t) = tee {
                            t.feed(&filtered);
                        }
                        chunk_into(writer, &filtered, &mut out);
                    });
                    if let Err(e) = split {
                        log::warn!("filtering a watch: {e}; connection closed");
                        return Outcome::Close;
                    }
                    if !out.is_empty()
                        && (conn.writer.write_all(&out).await.is_err()
                            || conn.writer.flush().await.is_err())
                    {
                        return Outcome::Close;
                    }
                } else if let Some(ls) = &mut list {
                    filtered.clear();
                    if let Err(e) = ls.feed(data, &self.chain, &mut filtered) {
                        log::warn!("filtering a list: {e}; connection closed");
                        return Outcome::Close;
                    }
                    if let Some(t) = &mut self.tee {
                        t.feed(&filtered);
                    }
                    out.clear();
                    writer.encode(&filtered, &mut out);
                    if !out.is_empty() && conn.writer.write_all(&out).await.is_err() {
                        return Outcome::Close;
                    }
                } else {
                    buf.extend_from_slice(data);
                    if buf.len() > MAX_FILTERED_BYTES {
                        log::warn!(
                            "a response to filter is larger than {MAX_FILTERED_BYTES} bytes"
                        );
                        return Outcome::Close;
                    }
                }
            }
            proxy
                .metrics
                .gzip_saved_so_far(&mut gzip_saved, gunzip.as_ref().map(GzipDecoder::totals));
            if n == 0 {
                break;
            }
        }
        if let Some(Err(e)) = gunzip.as_ref().map(GzipDecoder::finish) {
            log::warn!("upstream gzip body: {e}; connection closed");
            return Outcome::Close;
        }
        out.clear();
        if self.watch {
            writer.finish(&mut out);
        } else if let Some(ls) = &list {
            if ls.is_cut() {
                // Ended inside the items: no last chunk, so the client knows the body is
                // incomplete.
                log::warn!("a filtered list ended early; connection closed");
                return Outcome::Close;
            }
            writer.finish(&mut out);
            if !ls.is_complete() {
                // Not a list after all: passed through, but not a list for the cache.
                self.tee = None;
            }
        } else {
            let body = self.chain.apply_body(&buf).unwrap_or(buf);
            if let Some(t) = &mut self.tee {
                t.feed(&body);
            }
            head.headers.set("Content-Length", body.len().to_string());
            head.write_to(&mut out);
            if method != "HEAD" {
                out.extend_from_slice(&body);
            }
        }
        // The answer is whole: the cache has its copy before the last write to the client, as
        // in the plain relay (a client that stops reading must not cost the cache its copy,
        // and one that reads on finds the cache already told).
        if let Some(t) = self.tee.take() {
            t.finish();
        }
        if conn.writer.write_all(&out).await.is_err() || conn.writer.flush().await.is_err() {
            return Outcome::Close;
        }
        self.ctx.log(resp.head.status, "filtered");
        if resp.head.keep_alive() && up_framing != Framing::Close && resp.body.is_done() {
            proxy.upstream.release(resp.conn);
        }
        if streamed && self.ctx.http10 {
            Outcome::Close
        } else {
            Outcome::KeepAlive
        }
    }
}
