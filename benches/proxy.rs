//! Proxy figures, printed as a table and compared with DESIGN.md §3 (never asserted):
//! the added p50/p99 latency of a proxied GET against the same request sent straight to the
//! test apiserver, and the delay of a watch event through the hub. Where Debian's nginx is
//! installed (`/usr/sbin/nginx`), the same GETs through nginx proxying the same apiserver with
//! the same client certificate, and nginx's memory, side by side.
//!
//! Where the Kubernetes binaries are (`YURTHUB_KUBE_ASSETS`, see `testapi::envtest`), the same
//! comparison against a real kube-apiserver 1.36: direct, through nginx and through the hub (the
//! release binary as its own process, like nginx), one client and sixteen, for a pod's bearer
//! token passed through and for kubelet's cached and filtered path.
//!
//! Run with `cargo bench --bench proxy` (`-- test` or `-- real` for one of the two parts).

use std::time::{Duration, Instant};
use testapi::client::{self, Session};
use testapi::{pod, Cluster, NODE};
use yurthub::app::config::{Config, Parsed};

const SAMPLES: usize = 2000;
/// Rounds of the c=16 throughput figures (one second per path each).
const ROUNDS: usize = 4;
/// A cache agent no filter applies to for pods: the plain proxied path (kubelet's pod reads
/// also pass serviceenvupdater).
const UA: &str = "coredns/1.11.3";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// nginx in front of `api` with the node's client certificate: its address, the process and
/// its directory (removed when the guard drops).
struct Nginx {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: testapi::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master then stops its workers too.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Nginx {
    fn start(api: std::net::SocketAddr, client_pem: &str) -> Option<Nginx> {
        let bin = std::path::Path::new("/usr/sbin/nginx");
        if !bin.exists() {
            return None;
        }
        let dir = testapi::TempDir::new("nginx");
        let d = dir.path().display().to_string();
        std::fs::write(dir.path().join("node.pem"), client_pem).ok()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let conf = format!(
            "worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; keepalive_requests 1000000; client_body_temp_path {d};\n\
               proxy_temp_path {d};\n\
               fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               upstream api {{ server {api}; keepalive 16; }}\n\
               server {{ listen 127.0.0.1:{port};\n\
                 location / {{ proxy_pass https://api; proxy_http_version 1.1;\n\
                   proxy_set_header Connection \"\"; proxy_buffering off;\n\
                   proxy_ssl_certificate {d}/node.pem; proxy_ssl_certificate_key {d}/node.pem;\n\
                   proxy_ssl_session_reuse on; }} }} }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).ok()?;
        let child = std::process::Command::new(bin)
            .args([
                "-p",
                &d,
                "-c",
                &format!("{d}/nginx.conf"),
                "-e",
                &format!("{d}/error.log"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Nginx {
            child,
            addr,
            _dir: dir,
        })
    }

    /// RSS of the master and its workers, KiB.
    fn rss_kib(&self) -> u64 {
        let pid = self.child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        testapi::rss_kib(pid)
            + children
                .split_whitespace()
                .filter_map(|c| c.parse().ok())
                .map(testapi::rss_kib)
                .sum::<u64>()
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a bare word picks one part.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |part: &str| only.is_empty() || only.iter().any(|o| o == part);
    if wanted("test") {
        test_apiserver_figures();
    }
    if wanted("real") {
        real_apiserver_figures();
    }
}

fn test_apiserver_figures() {
    let c = Cluster::new();
    c.api
        .create("/api/v1/namespaces/default/pods", pod("bench", NODE));
    let Parsed::Run(cfg) = Config::from_args(c.hub_args(&[&c.api])).expect("flags") else {
        unreachable!("hub_args never asks for --help")
    };
    let hub = yurthub::app::start(&cfg).expect("hub starts");
    yurthub::runtime::spawn_thread();
    testapi::wait_ready(hub.admin_addr);

    let client_pem = c.pki.client_pem("system:node:node-1", &["system:nodes"]);
    let mut direct =
        Session::new(client::tls_connect(c.api.addr(), &c.pki.ca_pem, &client_pem).unwrap());
    let tcp = std::net::TcpStream::connect(hub.proxy_addr).unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut proxied = Session::new(tcp);
    let path = "/api/v1/namespaces/default/pods/bench";

    let mut t_direct = Vec::with_capacity(SAMPLES);
    let mut t_proxied = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES + 200 {
        let t = Instant::now();
        assert_eq!(direct.get(path, UA).unwrap().status, 200);
        let d = t.elapsed();
        let t = Instant::now();
        assert_eq!(proxied.get(path, UA).unwrap().status, 200);
        let p = t.elapsed();
        if i >= 200 {
            t_direct.push(d);
            t_proxied.push(p);
        }
    }
    t_direct.sort();
    t_proxied.sort();

    // Watch delay: from the create call until the event line arrives through the hub.
    let rv = c.api.resource_version();
    let mut w = client::open(
        hub.proxy_addr,
        "GET",
        &format!("/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}"),
        &[("User-Agent", UA)],
        b"",
    )
    .unwrap();
    let mut t_watch = Vec::new();
    for i in 0..300 {
        let t = Instant::now();
        c.api.create(
            "/api/v1/namespaces/default/pods",
            pod(&format!("w-{i}"), NODE),
        );
        w.next_line().unwrap().expect("an event");
        t_watch.push(t.elapsed());
    }
    t_watch.sort();
    // The same, straight from the apiserver (chunked framing read by hand over TLS).
    let mut t_watch_direct = Vec::new();
    {
        use std::io::{BufRead, Read, Write};
        let tls = client::tls_connect(c.api.addr(), &c.pki.ca_pem, &client_pem).unwrap();
        let mut r = std::io::BufReader::new(tls);
        let rv = c.api.resource_version();
        let req = format!("GET /api/v1/namespaces/default/pods?watch=true&resourceVersion={rv} HTTP/1.1\r\nHost: x\r\nUser-Agent: {UA}\r\nAccept: application/json\r\n\r\n");
        r.get_mut().write_all(req.as_bytes()).unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
        }
        for i in 0..300 {
            let t = Instant::now();
            c.api.create(
                "/api/v1/namespaces/default/pods",
                pod(&format!("d-{i}"), NODE),
            );
            line.clear();
            r.read_line(&mut line).unwrap();
            let size = usize::from_str_radix(line.trim(), 16).unwrap();
            let mut data = vec![0u8; size + 2];
            r.read_exact(&mut data).unwrap();
            t_watch_direct.push(t.elapsed());
        }
    }
    t_watch_direct.sort();

    let (d50, p50) = (percentile(&t_direct, 0.5), percentile(&t_proxied, 0.5));
    let (d99, p99) = (percentile(&t_direct, 0.99), percentile(&t_proxied, 0.99));
    let added = micros(p50) - micros(d50);
    println!("figure                                   value        budget     verdict");
    println!(
        "GET direct to apiserver p50/p99 (us)     {:>6.0}/{:<6.0}",
        micros(d50),
        micros(d99)
    );
    println!(
        "GET through the hub p50/p99 (us)         {:>6.0}/{:<6.0}",
        micros(p50),
        micros(p99)
    );
    println!(
        "added latency of a proxied GET p50 (us)  {:>8.0}     <= 150     {}",
        added,
        if added <= 150.0 { "PASS" } else { "MISS" }
    );
    println!(
        "watch event direct p50/p99 (us)          {:>6.0}/{:<6.0}",
        micros(percentile(&t_watch_direct, 0.5)),
        micros(percentile(&t_watch_direct, 0.99))
    );
    println!(
        "watch event through the hub p50/p99 (us) {:>6.0}/{:<6.0} added p50 {:.0} us",
        micros(percentile(&t_watch, 0.5)),
        micros(percentile(&t_watch, 0.99)),
        micros(percentile(&t_watch, 0.5)) - micros(percentile(&t_watch_direct, 0.5))
    );
    match Nginx::start(c.api.addr(), &client_pem) {
        None => println!("nginx side by side: /usr/sbin/nginx not installed (apt install nginx)"),
        Some(nginx) => {
            let tcp = std::net::TcpStream::connect(nginx.addr).unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut via = Session::new(tcp);
            let mut t_nginx = Vec::with_capacity(SAMPLES);
            for i in 0..SAMPLES + 200 {
                let t = Instant::now();
                let r = via.get(path, UA).unwrap_or_else(|e| {
                    let log = std::fs::read_to_string(nginx._dir.path().join("error.log"));
                    panic!("through nginx: {e}; its log: {log:?}")
                });
                assert_eq!(r.status, 200, "{}", r.text());
                if i >= 200 {
                    t_nginx.push(t.elapsed());
                }
            }
            t_nginx.sort();
            let (n50, n99) = (percentile(&t_nginx, 0.5), percentile(&t_nginx, 0.99));
            println!(
                "GET through nginx p50/p99 (us)           {:>6.0}/{:<6.0} added p50 {:.0} us (the hub: {:.0})",
                micros(n50),
                micros(n99),
                micros(n50) - micros(d50),
                added
            );
            println!(
                "nginx RSS, master + 1 worker (KiB)       {:>8}     (a plain proxy: no cache, no offline answers)",
                nginx.rss_kib()
            );
        }
    }
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/yurthub");
    match std::fs::metadata(&bin) {
        Ok(m) => println!(
            "stripped release binary, host (bytes)    {:>8}     (aarch64 budget 2.5 MiB, see README)",
            m.len()
        ),
        Err(_) => println!("stripped release binary: run `cargo build --release` first"),
    }
}

/// One kept-alive connection of any kind.
trait Stream: std::io::Read + std::io::Write + Send {}
impl<T: std::io::Read + std::io::Write + Send> Stream for T {}

/// Where a request path is sent: straight to the apiserver over TLS, or to a proxy in plain
/// HTTP on loopback.
#[derive(Clone)]
enum Via {
    Direct {
        addr: std::net::SocketAddr,
        ca: String,
        client: Option<String>,
    },
    Proxy(std::net::SocketAddr),
}

impl Via {
    fn connect(&self) -> Session<Box<dyn Stream>> {
        match self {
            Via::Direct { addr, ca, client } => {
                let s = match client {
                    Some(pem) => client::tls_connect(*addr, ca, pem),
                    None => client::tls_connect_anonymous(*addr, ca),
                }
                .expect("TLS to the apiserver");
                Session::new(Box::new(s))
            }
            Via::Proxy(addr) => {
                let tcp = std::net::TcpStream::connect(addr).expect("connect to the proxy");
                tcp.set_nodelay(true).unwrap();
                Session::new(Box::new(tcp))
            }
        }
    }
}

/// One request shape: what a kubelet or a pod sends.
struct Shape {
    name: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
}

fn send(s: &mut Session<Box<dyn Stream>>, shape: &Shape) -> u16 {
    let headers: Vec<(&str, &str)> = shape
        .headers
        .iter()
        .map(|(n, v)| (*n, v.as_str()))
        .collect();
    let r = s
        .request("GET", &shape.path, &headers, b"")
        .expect("a response");
    if r.status != 200 {
        eprintln!("{}: {} {}", shape.name, r.status, r.text());
    }
    r.status
}

/// Requests per second with `clients` connections each sending back to back for `run`.
fn throughput(via: &Via, shape: &Shape, clients: usize, run: Duration) -> f64 {
    let done = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..clients {
            scope.spawn(|| {
                let mut s = via.connect();
                let warm = Instant::now() + Duration::from_millis(300);
                while Instant::now() < warm {
                    assert_eq!(send(&mut s, shape), 200);
                }
                let end = Instant::now() + run;
                let mut n = 0;
                while Instant::now() < end {
                    assert_eq!(send(&mut s, shape), 200);
                    n += 1;
                }
                done.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            });
        }
    });
    done.into_inner() as f64 / run.as_secs_f64()
}

fn real_apiserver_figures() {
    use serde_json::json;
    use testapi::envtest::{Assets, ControlPlane};
    let Some(assets) = Assets::find() else {
        println!("real kube-apiserver: {}", testapi::envtest::SKIPPED);
        return;
    };
    let cp = ControlPlane::start(assets);
    let admin = cp.admin();
    let node = "bench-node";
    let root = testapi::TempDir::new("bench-root");
    let cache = testapi::TempDir::new("bench-cache");
    let mut args = cp.join_args(node, root.path(), cache.path(), 0);
    // No kubelet renews its lease here: without this the hub would count the cloud gone
    // after 40 s and answer from its cache.
    args.push("--kubelet-health-grace-period=24h".into());
    let hub = testapi::Hub::start(env!("CARGO_BIN_EXE_yurthub"), &args);
    let node_pem = std::fs::read_to_string(root.path().join("pki/yurthub-current.pem"))
        .expect("the hub's client certificate");
    // The Node must exist (the pod garbage collector deletes pods of unknown nodes) and the
    // pod tolerate it never being Ready (no kubelet runs here).
    admin.create(
        "/api/v1/nodes",
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}),
    );
    admin.create(
        "/api/v1/namespaces/default/pods",
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bench"},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "registry.example/app:1"}],
                         "tolerations": [{"operator": "Exists", "effect": "NoExecute"}]}}),
    );
    // A pod's own token, for the pass-through path.
    admin.create(
        "/api/v1/namespaces/default/serviceaccounts",
        &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bench"}}),
    );
    admin.create(
        "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "bench"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "ServiceAccount", "name": "bench", "namespace": "default"}]}),
    );
    let token = admin.create(
        "/api/v1/namespaces/default/serviceaccounts/bench/token",
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3600}}),
    )["status"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    // One pod GET each, as a pod's client, a plain node client, coredns and kubelet send it.
    let shape = |name, ua: &str, bearer: bool| {
        let mut headers = vec![
            ("User-Agent", ua.to_string()),
            ("Accept", "application/json".to_string()),
        ];
        if bearer {
            headers.push(("Authorization", format!("Bearer {token}")));
        }
        Shape {
            name,
            path: "/api/v1/namespaces/default/pods/bench".to_string(),
            headers,
        }
    };
    let shapes = [
        shape("bearer pass-through", "bench-operator/1.0", true),
        shape(
            "node identity, neither cached nor filtered",
            "bench-operator/1.0",
            false,
        ),
        shape("coredns, cached", "coredns/1.12.0", false),
        shape(
            "kubelet, cached and filtered",
            "kubelet/v1.36.2 (linux/amd64) kubernetes/98b3519",
            false,
        ),
    ];
    let nginx = Nginx::start(cp.addr(), &node_pem);
    if nginx.is_none() {
        println!(
            "real kube-apiserver: nginx not installed (apt install nginx): no side-by-side figures"
        );
    }
    println!();
    println!("against kube-apiserver 1.36 (envtest), GET of one pod; p50/p99 in us, throughput in requests/s");
    for shape in &shapes {
        let bearer = shape.headers.iter().any(|(n, _)| *n == "Authorization");
        let direct = Via::Direct {
            addr: cp.addr(),
            ca: cp.ca_pem().to_string(),
            client: (!bearer).then(|| node_pem.clone()),
        };
        let mut vias = vec![("direct", direct), ("hub", Via::Proxy(hub.proxy_addr))];
        if let Some(n) = &nginx {
            vias.push(("nginx", Via::Proxy(n.addr)));
        }
        // c=1, the paths interleaved so that drift in the apiserver hits all alike.
        let mut sessions: Vec<_> = vias.iter().map(|(_, v)| v.connect()).collect();
        let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(SAMPLES); vias.len()];
        for i in 0..SAMPLES + 200 {
            for (k, s) in sessions.iter_mut().enumerate() {
                let t = Instant::now();
                assert_eq!(send(s, shape), 200, "{} via {}", shape.name, vias[k].0);
                if i >= 200 {
                    times[k].push(t.elapsed());
                }
            }
        }
        drop(sessions);
        for t in &mut times {
            t.sort();
        }
        let p50: Vec<f64> = times.iter().map(|t| micros(percentile(t, 0.5))).collect();
        let p99: Vec<f64> = times.iter().map(|t| micros(percentile(t, 0.99))).collect();
        // c=16 in rounds, the paths taking turns, so that drift hits all alike.
        let mut rates = vec![0.0; vias.len()];
        for _ in 0..ROUNDS {
            for (k, (_, v)) in vias.iter().enumerate() {
                rates[k] += throughput(v, shape, 16, Duration::from_secs(1)) / ROUNDS as f64;
            }
        }
        println!("{}:", shape.name);
        for (k, (name, _)) in vias.iter().enumerate() {
            println!(
                "  {name:<7} c=1 p50/p99 {:>6.0}/{:<6.0} added p50 {:>5.0}   c=16 {:>7.0}/s ({:.0} % of direct)",
                p50[k],
                p99[k],
                p50[k] - p50[0],
                rates[k],
                rates[k] / rates[0] * 100.0
            );
        }
        if vias.len() == 3 {
            let (hub_added, nginx_added) = (p50[1] - p50[0], p50[2] - p50[0]);
            println!(
                "  hub added p50 {hub_added:.0} us <= nginx's {nginx_added:.0} us: {}",
                if hub_added <= nginx_added {
                    "PASS"
                } else {
                    "MISS"
                }
            );
            println!(
                "  hub c=16 {:.0}/s >= nginx's {:.0}/s: {}",
                rates[1],
                rates[2],
                if rates[1] >= rates[2] { "PASS" } else { "MISS" }
            );
        }
    }
    println!(
        "hub RSS after the run (KiB)              {:>8}",
        testapi::rss_kib(hub.pid())
    );
}
