//! A stand-in cloud for a real node: the test apiserver on the host, for a hub running
//! elsewhere (a VM, a Pi on the bench) to join with a bootstrap token.
//!
//! `cargo run --example cloud -- <listen address> <extra certificate IP>...` prints one line,
//! `port=<p> token=<id.secret> pin=sha256:<hex>`, then serves until stdin closes. Its CSR
//! approver signs what yurt-manager and kube-controller-manager would; a pod is bound to node
//! `qemu-node`. `targets/qemu/system-test.sh` uses it (the guest reaches the host as 10.0.2.2).

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use testapi::{pod, ApiServer, Pki};

fn main() {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()
        .expect("a listen address such as 127.0.0.1:0");
    let ips: Vec<IpAddr> = args
        .map(|a| a.parse().expect("an IP address for the certificate"))
        .collect();
    let pki = Pki::for_addresses(&ips);
    let api = ApiServer::start_on(&pki, listen);
    api.add_bootstrap_token("qemu01", "0123456789abcdef");
    api.create("/api/v1/namespaces/default/pods", pod("web-1", "qemu-node"));
    println!(
        "port={} token=qemu01.0123456789abcdef pin={}",
        api.addr().port(),
        pki.ca_pin()
    );
    // Serve until whoever started us closes our stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
