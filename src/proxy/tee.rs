//! The copy of a response body that goes to the cache: decompressed on its own (the client
//! may keep the gzip bytes), collected for bodies, split into lines for watches. It never
//! blocks the client stream: the cache queue drops on overflow.

use crate::cache::{Cache, Shape, Target};
use crate::http::gzip::GzipDecoder;
use crate::kube::Lines;

/// The largest single watch event kept.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

enum Kind {
    Body(Target),
    Watch(Target, u64, Lines),
    Raw(String),
}

/// One response's copy for the cache.
pub struct Tee {
    cache: Cache,
    kind: Kind,
    gunzip: Option<GzipDecoder>,
    buf: Vec<u8>,
    plain: Vec<u8>,
    broken: bool,
}

impl Tee {
    fn new(cache: &Cache, kind: Kind, gzip: bool) -> Self {
        Self {
            cache: cache.clone(),
            kind,
            gunzip: gzip.then(GzipDecoder::new),
            buf: Vec::new(),
            plain: Vec::new(),
            broken: false,
        }
    }

    /// A tee for a whole-body response (get, create, update, patch, list).
    pub fn body(cache: &Cache, target: Target, gzip: bool) -> Self {
        Self::new(cache, Kind::Body(target), gzip)
    }

    /// A tee for a watch stream.
    pub fn watch(cache: &Cache, target: Target, gzip: bool) -> Self {
        let stream = cache.new_stream();
        Self::new(
            cache,
            Kind::Watch(target, stream, Lines::new(MAX_EVENT_BYTES)),
            gzip,
        )
    }

    /// A tee for a cached non-resource path, stored under `file`.
    pub fn raw(cache: &Cache, file: &str, gzip: bool) -> Self {
        Self::new(cache, Kind::Raw(file.to_string()), gzip)
    }

    /// Takes the next piece of the body as it came from the apiserver. A gzip piece is
    /// unpacked a bounded step at a time: a few KiB of gzip can stand for many MiB (a bomb),
    /// and the copy must stop at its limit before holding them.
    pub fn feed(&mut self, raw: &[u8]) {
        if self.broken {
            return;
        }
        let Some(mut gz) = self.gunzip.take() else {
            self.take(raw);
            return;
        };
        let mut plain = std::mem::take(&mut self.plain);
        let mut pos = 0;
        while !self.broken {
            match gz.step(raw, &mut pos, &mut plain) {
                Ok(true) => self.take(&plain),
                Ok(false) => break,
                Err(e) => {
                    log::warn!("cache copy of a gzip body: {e}; not cached");
                    self.broken = true;
                }
            }
        }
        self.gunzip = Some(gz);
        self.plain = plain;
    }

    fn take(&mut self, data: &[u8]) {
        match &mut self.kind {
            Kind::Body(t) => {
                self.buf.extend_from_slice(data);
                let max = self.cache.max_body_bytes();
                if self.buf.len() > max {
                    log::info!(
                        "{} {}: response larger than --max-cached-list-bytes={max}: streamed, not cached",
                        t.component,
                        t.resource
                    );
                    if matches!(t.shape, Shape::List { .. }) {
                        self.cache.list_too_large(t);
                    }
                    self.broken = true;
                    self.buf = Vec::new();
                }
            }
            Kind::Raw(name) => {
                self.buf.extend_from_slice(data);
                if self.buf.len() > self.cache.max_body_bytes() {
                    log::info!("{name}: response too large: streamed, not cached");
                    self.broken = true;
                    self.buf = Vec::new();
                }
            }
            Kind::Watch(target, stream, lines) => {
                let cache = &self.cache;
                let sent = lines.push(data, |line| {
                    cache.watch_event(target, *stream, line.to_vec())
                });
                if let Err(e) = sent {
                    log::info!("{e}: not cached");
                    self.broken = true;
                }
            }
        }
    }

    /// Compressed and plain bytes of the copy, when the tee unpacked it.
    pub fn gzip_totals(&self) -> Option<(u64, u64)> {
        self.gunzip.as_ref().map(GzipDecoder::totals)
    }

    /// Ends the copy: a complete, well-formed body is handed to the cache.
    pub fn finish(mut self) {
        if self.broken || self.gunzip.as_ref().is_some_and(|g| g.finish().is_err()) {
            return;
        }
        match &self.kind {
            Kind::Body(t) => self.cache.response(t, std::mem::take(&mut self.buf)),
            Kind::Raw(name) => self.cache.put_raw(name, std::mem::take(&mut self.buf)),
            Kind::Watch(..) => {}
        }
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        if let Kind::Watch(_, stream, _) = self.kind {
            self.cache.end_watch(stream);
        }
    }
}
