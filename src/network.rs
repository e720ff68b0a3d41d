//! The dummy interface (reference §10.2): a Linux `dummy` link (`--dummy-if-name`,
//! `hub-dummy0`) carrying `--dummy-if-ip`/32 (169.254.2.1), so pods and kube-proxy's DNAT
//! reach the hub on an address that exists on every node. Made over rtnetlink by hand: four
//! small messages, no netlink library. Re-ensured every minute, removed on shutdown.
//!
//! Kernels without dummy links (`CONFIG_DUMMY` off, as on some VMs and minimal Pi kernels)
//! get the address on `lo` instead, which makes it just as local; the log says so.

use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType};
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFF_UP: u32 = 1;
const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const EADDRNOTAVAIL: i32 = 99;
const EOPNOTSUPP: i32 = 95;

/// How often the link and its address are checked.
pub const REENSURE_EVERY: Duration = Duration::from_secs(60);

/// Why the link could not be set up.
#[derive(Debug)]
pub enum NetError {
    /// The netlink socket could not be used.
    Socket(std::io::Error),
    /// The kernel refused a request.
    Refused {
        /// What was asked.
        what: &'static str,
        /// The errno.
        errno: i32,
    },
    /// The kernel's answer did not parse.
    Garbled(&'static str),
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::Socket(e) => write!(f, "netlink socket: {e}"),
            NetError::Refused { what, errno } => write!(
                f,
                "{what}: {}{}",
                std::io::Error::from_raw_os_error(*errno),
                if *errno == 1 {
                    " (needs CAP_NET_ADMIN)"
                } else {
                    ""
                }
            ),
            NetError::Garbled(what) => write!(f, "netlink answer to {what} did not parse"),
        }
    }
}

impl std::error::Error for NetError {}

/// Where the address lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// On the dummy link.
    Dummy,
    /// On `lo` (the kernel has no dummy links).
    Loopback,
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// One rtnetlink request under construction.
struct Message(Vec<u8>);

impl Message {
    fn new(kind: u16, flags: u16) -> Self {
        let mut m = vec![0u8; 16];
        m[4..6].copy_from_slice(&kind.to_ne_bytes());
        m[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        m[8..12].copy_from_slice(&1u32.to_ne_bytes());
        Message(m)
    }

    /// `struct ifinfomsg`.
    fn ifinfo(mut self, index: i32, flags: u32, change: u32) -> Self {
        self.0.extend_from_slice(&[0, 0, 0, 0]); // family AF_UNSPEC, pad, type
        self.0.extend_from_slice(&index.to_ne_bytes());
        self.0.extend_from_slice(&flags.to_ne_bytes());
        self.0.extend_from_slice(&change.to_ne_bytes());
        self
    }

    /// `struct ifaddrmsg` for `ip`/host on link `index`.
    fn ifaddr(mut self, ip: IpAddr, index: u32) -> Self {
        let (family, prefix) = match ip {
            IpAddr::V4(_) => (2u8, 32u8),
            IpAddr::V6(_) => (10u8, 128u8),
        };
        self.0.extend_from_slice(&[family, prefix, 0, 0]);
        self.0.extend_from_slice(&index.to_ne_bytes());
        self
    }

    fn attr(mut self, kind: u16, data: &[u8]) -> Self {
        let len = 4 + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(align(self.0.len()), 0);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[0..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn name_attr(name: &str) -> Vec<u8> {
    let mut n = name.as_bytes().to_vec();
    n.push(0);
    n
}

/// Sends one request and reads until its ACK (or error); returns the ifinfomsg index of an
/// `RTM_NEWLINK` answer, if one came.
fn exchange(msg: Vec<u8>, what: &'static str) -> Result<Option<i32>, NetError> {
    exchange_link(msg, what).map(|l| l.map(|(index, _)| index))
}

/// The netlink attributes in `data`: (type, payload) pairs; a malformed tail ends the walk.
fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = u16::from_ne_bytes([*data.first()?, *data.get(1)?]) as usize;
        let kind = u16::from_ne_bytes([*data.get(2)?, *data.get(3)?]);
        if len < 4 || len > data.len() {
            return None;
        }
        let payload = &data[4..len];
        data = &data[align(len).min(data.len())..];
        Some((kind, payload))
    })
}

/// The kind (`dummy`, `bridge`, `vxlan`, …) in an `RTM_NEWLINK` body, if it names one.
fn link_kind(body: &[u8]) -> Option<String> {
    let (_, info) = attrs(body.get(16..)?).find(|(k, _)| *k == IFLA_LINKINFO)?;
    let (_, kind) = attrs(info).find(|(k, _)| *k == IFLA_INFO_KIND)?;
    let kind = kind.split(|b| *b == 0).next().unwrap_or(kind);
    Some(String::from_utf8_lossy(kind).into_owned())
}

/// [`exchange`], also returning the link's kind from an `RTM_NEWLINK` answer.
fn exchange_link(
    msg: Vec<u8>,
    what: &'static str,
) -> Result<Option<(i32, Option<String>)>, NetError> {
    let fd = rustix::net::socket(AddressFamily::NETLINK, SocketType::RAW, None)
        .map_err(|e| NetError::Socket(e.into()))?;
    let kernel = SocketAddrNetlink::new(0, 0);
    rustix::net::sendto(&fd, &msg, SendFlags::empty(), &kernel)
        .map_err(|e| NetError::Socket(e.into()))?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut index = None;
    loop {
        let (_, n) = rustix::net::recv(&fd, &mut buf[..], RecvFlags::empty())
            .map_err(|e| NetError::Socket(e.into()))?;
        let mut rest = &buf[..n.min(buf.len())];
        if rest.is_empty() {
            return Err(NetError::Garbled(what));
        }
        while rest.len() >= 16 {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            if len < 16 || len > rest.len() {
                return Err(NetError::Garbled(what));
            }
            let body = &rest[16..len];
            match kind {
                NLMSG_ERROR => {
                    let errno = body
                        .get(..4)
                        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .ok_or(NetError::Garbled(what))?;
                    return if errno == 0 {
                        Ok(index)
                    } else {
                        Err(NetError::Refused {
                            what,
                            errno: -errno,
                        })
                    };
                }
                RTM_NEWLINK => {
                    index = body
                        .get(4..8)
                        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .map(|i| (i, link_kind(body)));
                }
                _ => {}
            }
            rest = &rest[align(len).min(rest.len())..];
        }
    }
}

fn link_index(name: &str) -> Result<Option<i32>, NetError> {
    let msg = Message::new(RTM_GETLINK, 0)
        .ifinfo(0, 0, 0)
        .attr(IFLA_IFNAME, &name_attr(name))
        .finish();
    match exchange(msg, "looking up the link") {
        Ok(i) => Ok(i),
        Err(NetError::Refused { errno: ENODEV, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The dummy link and its address.
pub struct DummyIf {
    name: String,
    ip: IpAddr,
    placed: Mutex<Option<Placement>>,
    stopped: std::sync::atomic::AtomicBool,
}

impl DummyIf {
    /// The link `name` with `ip`.
    pub fn new(name: &str, ip: IpAddr) -> Self {
        Self {
            name: name.to_string(),
            ip,
            placed: Mutex::new(None),
            stopped: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Creates the link (or finds it), gives it the address and brings it up; idempotent.
    /// Blocking (a few netlink round trips).
    pub fn ensure(&self) -> Result<Placement, NetError> {
        // Serialised with `remove`, so a late re-ensure cannot bring the link back.
        let mut placed = self.placed.lock().unwrap_or_else(|e| e.into_inner());
        if self.stopped.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(NetError::Garbled("ensure after remove"));
        }
        let (index, placement) = match link_index(&self.name)? {
            Some(i) => (i, Placement::Dummy),
            None => {
                let mut kind = Vec::new();
                let info = Message(Vec::new()).attr(IFLA_INFO_KIND, b"dummy").0;
                kind.extend_from_slice(&info);
                let create = Message::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL)
                    .ifinfo(0, 0, 0)
                    .attr(IFLA_IFNAME, &name_attr(&self.name))
                    .attr(IFLA_LINKINFO, &kind)
                    .finish();
                match exchange(create, "creating the dummy link") {
                    Ok(_) | Err(NetError::Refused { errno: EEXIST, .. }) => {
                        match link_index(&self.name)? {
                            Some(i) => (i, Placement::Dummy),
                            None => return Err(NetError::Garbled("creating the dummy link")),
                        }
                    }
                    Err(NetError::Refused {
                        errno: EOPNOTSUPP, ..
                    }) => match link_index("lo")? {
                        Some(i) => (i, Placement::Loopback),
                        None => return Err(NetError::Garbled("looking up lo")),
                    },
                    Err(e) => return Err(e),
                }
            }
        };
        // Known from here on, so `remove` cleans up even if a later step fails.
        let first = *placed != Some(placement);
        *placed = Some(placement);
        let ip = ip_bytes(self.ip);
        let addr = Message::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE)
            .ifaddr(self.ip, index as u32)
            .attr(IFA_LOCAL, &ip)
            .attr(IFA_ADDRESS, &ip)
            .finish();
        exchange(addr, "adding the address")?;
        let up = Message::new(RTM_NEWLINK, 0)
            .ifinfo(index, IFF_UP, IFF_UP)
            .finish();
        exchange(up, "bringing the link up")?;
        if first {
            match placement {
                Placement::Dummy => log::info!("dummy interface {} carries {}", self.name, self.ip),
                Placement::Loopback => log::warn!(
                    "the kernel has no dummy links: {} put on lo instead of {}",
                    self.ip,
                    self.name
                ),
            }
        }
        Ok(placement)
    }

    /// The kind of the link named `name` (`dummy`, or another: `bridge`, `vxlan`, … or
    /// none for a physical one), or `None` when there is no such link. No privilege
    /// needed. Blocking.
    pub fn kind_of(name: &str) -> Result<Option<String>, NetError> {
        let msg = Message::new(RTM_GETLINK, 0)
            .ifinfo(0, 0, 0)
            .attr(IFLA_IFNAME, &name_attr(name))
            .finish();
        match exchange_link(msg, "looking up the link") {
            Ok(Some((_, kind))) => Ok(Some(kind.unwrap_or_default())),
            Ok(None) | Err(NetError::Refused { errno: ENODEV, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes the link of this name, made by this process or an earlier one (`yurthub
    /// reset`); nothing when there is none. Blocking; needs CAP_NET_ADMIN.
    pub fn remove_link(&self) -> Result<(), NetError> {
        self.remove_placed(Some(Placement::Dummy))
    }

    /// Removes what [`DummyIf::ensure`] made: the link, or the address on `lo`. Blocking.
    pub fn remove(&self) -> Result<(), NetError> {
        let mut guard = self.placed.lock().unwrap_or_else(|e| e.into_inner());
        self.stopped
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let result = self.remove_placed(*guard);
        if result.is_ok() {
            *guard = None;
        }
        result
    }

    fn remove_placed(&self, placed: Option<Placement>) -> Result<(), NetError> {
        match placed {
            None => Ok(()),
            Some(Placement::Dummy) => {
                let msg = Message::new(RTM_DELLINK, 0)
                    .ifinfo(0, 0, 0)
                    .attr(IFLA_IFNAME, &name_attr(&self.name))
                    .finish();
                match exchange(msg, "deleting the dummy link") {
                    Err(NetError::Refused { errno: ENODEV, .. }) => Ok(()),
                    other => other.map(|_| ()),
                }
            }
            Some(Placement::Loopback) => {
                let Some(lo) = link_index("lo")? else {
                    return Ok(());
                };
                let ip = ip_bytes(self.ip);
                let msg = Message::new(RTM_DELADDR, 0)
                    .ifaddr(self.ip, lo as u32)
                    .attr(IFA_LOCAL, &ip)
                    .attr(IFA_ADDRESS, &ip)
                    .finish();
                match exchange(msg, "removing the address from lo") {
                    Err(NetError::Refused {
                        errno: EADDRNOTAVAIL,
                        ..
                    }) => Ok(()),
                    other => other.map(|_| ()),
                }
            }
        }
    }

    /// Re-ensures the link every [`REENSURE_EVERY`], forever (a failure is logged and
    /// tried again next time).
    pub async fn run(self: std::sync::Arc<Self>) {
        loop {
            let stop = smol::future::or(
                async {
                    async_io::Timer::after(REENSURE_EVERY).await;
                    false
                },
                async {
                    crate::runtime::shutting_down().await;
                    true
                },
            )
            .await;
            if stop {
                return;
            }
            let me = self.clone();
            if let Err(e) = smol::unblock(move || me.ensure()).await {
                log::warn!("dummy interface {}: {e}", self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_framed_and_padded() {
        let m = Message::new(RTM_NEWLINK, NLM_F_CREATE)
            .ifinfo(0, 0, 0)
            .attr(IFLA_IFNAME, &name_attr("hub-dummy0"))
            .finish();
        assert_eq!(m.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes([m[0], m[1], m[2], m[3]]) as usize,
            m.len()
        );
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_NEWLINK);
        let flags = u16::from_ne_bytes([m[6], m[7]]);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
        // header 16 + ifinfomsg 16, then the attribute: len 4+11, type 3, "hub-dummy0\0", pad 1.
        assert_eq!(u16::from_ne_bytes([m[32], m[33]]), 15);
        assert_eq!(u16::from_ne_bytes([m[34], m[35]]), IFLA_IFNAME);
        assert_eq!(&m[36..47], b"hub-dummy0\0");
        assert_eq!(m.len(), 48);
        let a = Message::new(RTM_NEWADDR, 0)
            .ifaddr("169.254.2.1".parse().unwrap(), 7)
            .attr(IFA_LOCAL, &[169, 254, 2, 1])
            .finish();
        assert_eq!(&a[16..20], &[2, 32, 0, 0]);
        assert_eq!(u32::from_ne_bytes([a[20], a[21], a[22], a[23]]), 7);
        assert_eq!(&a[28..32], &[169, 254, 2, 1]);
    }
}
