//! A TCP relay standing between the hub and a server where a NAT, an LTE modem or a load
//! balancer stands on an edge link. It counts the bytes each way (what a metered link bills)
//! and can forget every connection it carries at once without a word to either side, as a
//! NAT does when its entry times out or the modem reconnects: the sockets stay open, nothing
//! passes any more, and new connections pass again.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Shared {
    /// Connections opened before the last [`Middlebox::forget_all`] carry nothing.
    epoch: AtomicU64,
    stopped: AtomicBool,
    /// Bytes from the client to the server, and back.
    up: AtomicU64,
    down: AtomicU64,
    /// Forgotten connections, held open so neither side hears of their end.
    silent: Mutex<Vec<TcpStream>>,
    connections: AtomicU64,
}

/// The relay (see the module docs); it stops when dropped.
pub struct Middlebox {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Middlebox {
    /// Relays connections made to [`Middlebox::addr`] to `target`.
    pub fn start(target: SocketAddr) -> Middlebox {
        let listener = TcpListener::bind("127.0.0.1:0").expect("middlebox bind");
        let addr = listener.local_addr().expect("middlebox addr");
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            silent: Mutex::new(Vec::new()),
            connections: AtomicU64::new(0),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stopped.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                s.connections.fetch_add(1, Ordering::Relaxed);
                let epoch = s.epoch.load(Ordering::Relaxed);
                for (from, to, up) in [
                    (client.try_clone(), server.try_clone(), true),
                    (server.try_clone(), client.try_clone(), false),
                ] {
                    let (Ok(from), Ok(to)) = (from, to) else {
                        continue;
                    };
                    let s = s.clone();
                    std::thread::spawn(move || pipe(&s, from, to, up, epoch));
                }
            }
        });
        Middlebox { addr, shared }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to give the hub as `--server-addr`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Forgets every connection open now: from here on they carry nothing either way, and
    /// neither side is told.
    pub fn forget_all(&self) {
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Bytes relayed (client to server, server to client).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.shared.up.load(Ordering::Relaxed),
            self.shared.down.load(Ordering::Relaxed),
        )
    }

    /// Connections relayed so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }
}

impl Drop for Middlebox {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Relaxed);
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        for s in self.shared.silent.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn pipe(shared: &Shared, mut from: TcpStream, mut to: TcpStream, up: bool, epoch: u64) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 16 * 1024];
    let forgotten = || shared.epoch.load(Ordering::SeqCst) != epoch;
    loop {
        if forgotten() {
            // Held open, silent: the peers learn nothing.
            shared.silent.lock().unwrap().extend([from, to]);
            return;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if forgotten() {
                    continue;
                }
                if to.write_all(&buf[..n]).is_err() {
                    let _ = from.shutdown(Shutdown::Read);
                    return;
                }
                let counter = if up { &shared.up } else { &shared.down };
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}
