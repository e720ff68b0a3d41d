//! Entry points of the fuzz targets in `fuzz/`: each takes arbitrary bytes, drives one parser
//! the network or the disk feeds, and must never panic (nor loop, nor allocate without bound).
//! They are ordinary functions, compiled and unit-tested with the rest, so they cannot rot;
//! cargo fuzz (libFuzzer) calls them with coverage-guided inputs:
//!
//! ```text
//! RUSTC_BOOTSTRAP=1 cargo fuzz run request_head -s none -- -runs=10000000
//! ```

use std::path::Path;

use crate::cache::object::{parse_event, parse_list};
use crate::cache::seal::Sealer;
use crate::cache::store::is_json_object;
use crate::cache::Object;
use crate::filter::{Filters, ListStream, Settings};
use crate::http::gzip::GzipDecoder;
use crate::http::{BodyReader, Framing, Limits, Reader};
use crate::kube::{FieldSelector, LabelSelector, RequestInfo};

/// Splits fuzz input in two at the first NUL (or in the middle).
fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => data.split_at(data.len() / 2),
    }
}

/// A request head, and a response head, as a client and an apiserver could send them.
pub fn request_head(data: &[u8]) {
    smol::block_on(async {
        let _ = Reader::new(data)
            .read_request_head(&Limits::default())
            .await;
        if let Ok(head) = Reader::new(data)
            .read_response_head(&Limits::default())
            .await
        {
            let _ = Framing::of_response(&head, "GET");
        }
    });
}

/// A chunked body (extensions, trailers, bad sizes), read in the pieces the hub reads.
pub fn chunked_body(data: &[u8]) {
    smol::block_on(async {
        let mut rd = Reader::with_capacity(data, 4096);
        let mut body = BodyReader::new(Framing::Chunked);
        let mut out = Vec::new();
        while let Ok(n) = body.read(&mut rd, &mut out).await {
            if n == 0 {
                break;
            }
            out.clear();
        }
    });
}

/// A method and a request target, classified as kube-apiserver does, with its selectors.
pub fn request_info(data: &[u8]) {
    let (method, target) = split(data);
    let (Ok(method), Ok(target)) = (std::str::from_utf8(method), std::str::from_utf8(target))
    else {
        return;
    };
    if let Ok(ri) = RequestInfo::classify(method, target) {
        let _ = LabelSelector::parse(&ri.label_selector);
        let _ = FieldSelector::parse(&ri.field_selector);
    }
    let _ = crate::kube::time::parse(target);
}

/// A cache file as the disk may hold it: an object, a list, a sealed Secret.
pub fn cache_file(data: &[u8]) {
    if is_json_object(data) {
        let text = String::from_utf8_lossy(data);
        if let Some(o) = Object::parse(&text, None) {
            let _ = o.storable();
        }
    }
    let _ = parse_list(data, false);
    let _ = parse_list(data, true);
    if let Ok(sealer) = Sealer::from_key(&[7; 32]) {
        let _ = sealer.open(Path::new("kubelet/secrets.v1.core/ns/name"), data);
    }
}

/// A watch stream, split into lines as the cache's copy splits it, optionally gzip.
pub fn watch_stream(data: &[u8]) {
    for line in data.split(|&b| b == b'\n') {
        let _ = parse_event(line);
    }
    let mut gz = GzipDecoder::new();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        out.clear();
        match gz.decode(&data[pos..], &mut out, 64 * 1024) {
            Ok(0) if out.is_empty() => break,
            Ok(used) => pos += used,
            Err(_) => break,
        }
    }
    let _ = gz.finish();
}

/// A response body through every filter chain, whole, as a watch event, and streamed in
/// pieces; when the body is a list with one `items` key, both ways must agree.
pub fn json_filter(data: &[u8]) {
    let filters = Filters::new(Settings::default());
    for (component, resource) in [
        ("kubelet", "services"),
        ("kubelet", "configmaps"),
        ("kubelet", "pods"),
        ("kube-proxy", "services"),
        ("kube-proxy", "endpointslices"),
    ] {
        let Some(chain) = filters.chain(component, "list", resource) else {
            continue;
        };
        // `None` also means "nothing to change": then the body itself is what a client gets.
        let whole = chain.apply_body(data).or_else(|| {
            serde_json::from_slice::<serde_json::Value>(data)
                .ok()
                .map(|_| data.to_vec())
        });
        let _ = chain.apply_event(data);
        let mut stream = ListStream::new(1 << 20);
        let mut out = Vec::new();
        let piece = 1 + data.first().map_or(0, |b| *b as usize % 16);
        let fed = data
            .chunks(piece)
            .all(|p| stream.feed(p, &chain, &mut out).is_ok());
        let single_items = String::from_utf8_lossy(data).matches("\"items\"").count() == 1;
        if let (Some(whole), true, true, true) = (whole, fed, stream.is_complete(), single_items) {
            let a = serde_json::from_slice::<serde_json::Value>(&whole).ok();
            let b = serde_json::from_slice::<serde_json::Value>(&out).ok();
            assert_eq!(a, b, "streamed and whole filtering disagree");
        }
    }
}

/// A kubeconfig, as a bootstrap file or cluster-info may hold one: the YAML parser and the
/// fields read from it.
pub fn kubeconfig(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::certs::yaml::parse(&text);
    let _ = crate::certs::kubeconfig::Kubeconfig::parse(&text);
}

#[cfg(test)]
mod tests {
    /// The seeds of `fuzz/corpus` and some random bytes go through every target.
    #[test]
    fn every_target_takes_seeds_and_noise() {
        let seeds: &[&[u8]] = &[
            b"GET /api/v1/namespaces/default/pods?watch=true HTTP/1.1\r\nHost: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n",
            b"GET\0/apis/apps/v1/namespaces/a/deployments/b/scale?labelSelector=a%3Db",
            br#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"5"},"items":[{"metadata":{"name":"a","namespace":"b","resourceVersion":"4"}}]}"#,
            br#"{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"a","resourceVersion":"1"}}}"#,
            br#"{"kind":"ServiceList","items":[{"metadata":{"name":"kubernetes","namespace":"default"},"spec":{"type":"LoadBalancer"}}]}"#,
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03",
            b"clusters:\n- {name: k, cluster: {server: 'https://a', x: [1, *b]}}\nu: &b |+\n  t\n<<: *b\n",
        ];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut noise = Vec::new();
        for _ in 0..200 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            noise.push(x.to_le_bytes().to_vec());
        }
        let inputs = seeds.iter().map(|s| s.to_vec()).chain(noise);
        for input in inputs {
            super::request_head(&input);
            super::chunked_body(&input);
            super::request_info(&input);
            super::cache_file(&input);
            super::watch_stream(&input);
            super::json_filter(&input);
            super::kubeconfig(&input);
        }
    }
}
