//! Bad input from the network: malformed request heads get a 4xx or a closed connection, and
//! the hub serves normally afterwards.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use testapi::client::get;
use testapi::Cluster;

const BIN: &str = env!("CARGO_BIN_EXE_yurthub");

/// xorshift: reproducible garbage without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A request head damaged in one of many ways.
fn malformed(rng: &mut Rng) -> Vec<u8> {
    let good = b"GET /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: x\r\nUser-Agent: kubelet/v1\r\n\r\n".to_vec();
    match rng.below(10) {
        0 => (0..rng.below(300) + 1).map(|_| rng.next() as u8).collect(),
        1 => {
            let mut v = good.clone();
            for _ in 0..rng.below(5) + 1 {
                let i = rng.below(v.len() - 4);
                v[i] = rng.next() as u8;
            }
            v.truncate(v.len() - 4);
            v.extend_from_slice(b"\x00\r\n\r\n");
            v
        }
        2 => b"GET /api/v1/pods%zz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        3 => {
            let mut v = b"GET / HTTP/1.1\r\n".to_vec();
            for i in 0..200 {
                v.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
            }
            v.extend_from_slice(b"\r\n");
            v
        }
        4 => {
            let mut v = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
            v.extend(std::iter::repeat_n(b'a', 70_000));
            v.extend_from_slice(b"\r\n\r\n");
            v
        }
        5 => b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
        6 => b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nContent-Length: -3\r\n\r\n".to_vec(),
        7 => b"GET / HTTP/3.0\r\n\r\n".to_vec(),
        8 => b"GET /api/v1/watch HTTP/1.1\r\n\r\n".to_vec(),
        _ => b"GET api/v1/pods HTTP/1.1\r\n\r\n".to_vec(),
    }
}

#[test]
fn a_thousand_malformed_heads_get_4xx_or_a_close_and_the_hub_keeps_serving() {
    let c = Cluster::new();
    let hub = c.start_hub(BIN, &[]);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut answered = 0;
    for i in 0..1000 {
        let head = malformed(&mut rng);
        let mut s = TcpStream::connect(hub.proxy_addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let _ = s.write_all(&head);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut resp = Vec::new();
        match s.read_to_end(&mut resp) {
            Ok(_) => {}
            // A reset after the hub closed on unread input is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("case {i} {:?}: {e}", String::from_utf8_lossy(&head)),
        }
        if resp.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(&resp);
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        // The resolver's own error (an unresolvable path) is kube-apiserver's 500.
        assert!(
            (400..500).contains(&status) || status == 500,
            "case {i}: {:?} answered {text:?}",
            String::from_utf8_lossy(&head)
        );
        answered += 1;
    }
    assert!(
        answered > 500,
        "most malformed heads get an explicit answer ({answered})"
    );
    let r = get(hub.proxy_addr, "/version", "kubelet/v1");
    assert_eq!(r.status, 200);
}

#[test]
fn oversized_and_over_many_headers_get_431() {
    let c = Cluster::new();
    let hub = c.start_hub(BIN, &[]);
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..129 {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let mut s = TcpStream::connect(hub.proxy_addr).unwrap();
    s.write_all(&many).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    assert!(resp.contains("\"kind\":\"Status\""));
}

#[test]
fn unknown_flags_and_bad_values_exit_2_with_one_line() {
    for args in [
        vec!["--no-such-flag"],
        vec![
            "--server-addr=http://a",
            "--node-name=n",
            "--nodepool-name=p",
        ],
        vec![
            "--server-addr=https://a",
            "--node-name=n",
            "--nodepool-name=p",
            "--lb-mode=random",
        ],
        // No shell expanded it: a literal $(hostname) is no node name.
        vec![
            "--server-addr=https://a",
            "--nodepool-name=p",
            "--node-name=$(hostname)",
        ],
    ] {
        let out = testapi::command(BIN).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("--"), "{err}");
    }
    let out = testapi::command(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("yurthub "));
    let out = testapi::command(BIN).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--server-addr"));
}
