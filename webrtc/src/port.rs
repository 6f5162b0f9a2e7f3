//! The UDP side: which socket a session uses and which session a datagram is for.
//!
//! ```text
//! single port (--webrtc-udp-port): one socket, every session ──┐
//! range (--webrtc-udp-ports A-B): a socket per session ────────┴─▶ reader task per socket
//!     source address known ──────────────────────────────▶ that session's inbox
//!     unknown, STUN binding request to local ufrag U ────▶ session U (the address is learned)
//!     anything else ─────────────────────────────────────▶ dropped, counted (bitriver_webrtc_unrouted_datagrams_total)
//! ```
//!
//! Sessions are found by the ICE username fragment we gave them, the only thing a stranger's
//! first datagram must carry (RFC 8445); DTLS and SRTP follow from the address ICE nominated.
//! An inbox is bounded: a session that cannot keep up loses datagrams, not memory.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use prometheus::IntCounter;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::stun;

/// Largest datagram read; WebRTC keeps packets under the path MTU (str0m: 1150 bytes).
const MAX_DATAGRAM: usize = 2048;
/// Datagrams queued for one session before more are dropped.
const INBOX: usize = 1024;

/// A datagram for one session.
#[derive(Debug)]
pub(crate) struct Datagram {
    pub(crate) source: SocketAddr,
    /// The local candidate address it arrived at.
    pub(crate) destination: SocketAddr,
    pub(crate) at: Instant,
    pub(crate) data: Vec<u8>,
}

/// How sessions get sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortMode {
    /// Every session on one port (firewalls open one UDP port).
    Single(SocketAddr),
    /// A port of `first..=last` per session, on `ip`.
    Range { ip: IpAddr, first: u16, last: u16 },
}

#[derive(Debug, Default)]
struct Routes {
    inboxes: HashMap<String, mpsc::Sender<Datagram>>,
    addresses: HashMap<SocketAddr, String>,
}

struct Shared {
    routes: Mutex<Routes>,
    /// Addresses the host candidates use when a socket is bound to a wildcard.
    hosts: Vec<IpAddr>,
    unrouted: IntCounter,
    dropped: IntCounter,
}

/// The node's WebRTC media sockets. Cheap to clone.
#[derive(Clone)]
pub struct MediaPorts {
    mode: PortMode,
    shared: Arc<Shared>,
    /// The single-port socket.
    single: Option<(Arc<UdpSocket>, Arc<JoinHandle<()>>)>,
    cursor: Arc<AtomicU32>,
}

impl std::fmt::Debug for MediaPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaPorts").field("mode", &self.mode).finish_non_exhaustive()
    }
}

impl MediaPorts {
    /// Binds the single-port socket (in that mode) and starts reading it. `hosts`: the addresses
    /// to offer as host candidates for sockets bound to a wildcard.
    pub async fn bind(
        mode: PortMode,
        hosts: Vec<IpAddr>,
        unrouted: IntCounter,
        dropped: IntCounter,
    ) -> io::Result<Self> {
        let shared = Arc::new(Shared { routes: Mutex::default(), hosts, unrouted, dropped });
        let single = match &mode {
            PortMode::Single(addr) => {
                let socket = Arc::new(UdpSocket::bind(addr).await?);
                let reader = tokio::spawn(read(socket.clone(), shared.clone()));
                Some((socket, Arc::new(reader)))
            }
            PortMode::Range { first, last, .. } if first > last => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty UDP port range"));
            }
            PortMode::Range { .. } => None,
        };
        Ok(MediaPorts { mode, shared, single, cursor: Arc::new(AtomicU32::new(0)) })
    }

    /// The single port's bound address (`None` in range mode).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.single.as_ref().and_then(|(s, _)| s.local_addr().ok())
    }

    /// A socket and an inbox for the session whose local ufrag is `ufrag`.
    pub(crate) async fn lease(&self, ufrag: &str) -> io::Result<Lease> {
        let (socket, reader) = match &self.mode {
            PortMode::Single(_) => {
                let (socket, _) = self.single.as_ref().expect("bound in single-port mode");
                (socket.clone(), None)
            }
            PortMode::Range { ip, first, last } => {
                let socket = Arc::new(self.bind_in_range(*ip, *first, *last).await?);
                let reader = tokio::spawn(read(socket.clone(), self.shared.clone()));
                (socket, Some(reader))
            }
        };
        let local = socket.local_addr()?;
        let candidates: Vec<SocketAddr> = if local.ip().is_unspecified() {
            self.shared.hosts.iter().map(|ip| SocketAddr::new(*ip, local.port())).collect()
        } else {
            vec![local]
        };
        if candidates.is_empty() {
            return Err(io::Error::new(io::ErrorKind::AddrNotAvailable, "no address to offer as a host candidate"));
        }
        let (tx, inbox) = mpsc::channel(INBOX);
        self.shared.lock().inboxes.insert(ufrag.to_owned(), tx);
        Ok(Lease { socket, candidates, inbox, ufrag: ufrag.to_owned(), shared: self.shared.clone(), reader })
    }

    async fn bind_in_range(&self, ip: IpAddr, first: u16, last: u16) -> io::Result<UdpSocket> {
        let span = u32::from(last - first) + 1;
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        for i in 0..span {
            let port = first + ((start + i) % span) as u16;
            match UdpSocket::bind(SocketAddr::new(ip, port)).await {
                Ok(socket) => return Ok(socket),
                Err(error) if error.kind() == io::ErrorKind::AddrInUse => continue,
                Err(error) => return Err(error),
            }
        }
        Err(io::Error::new(io::ErrorKind::AddrInUse, format!("every UDP port of {first}-{last} is in use")))
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands `data` to its session, learning the source address from a binding request.
    fn route(&self, source: SocketAddr, local: SocketAddr, data: &[u8]) {
        let mut routes = self.lock();
        let ufrag = match routes.addresses.get(&source) {
            Some(ufrag) => ufrag.clone(),
            None => match stun::binding_request_ufrag(data) {
                Some(ufrag) if routes.inboxes.contains_key(ufrag) => {
                    routes.addresses.insert(source, ufrag.to_owned());
                    ufrag.to_owned()
                }
                _ => {
                    drop(routes);
                    self.unrouted.inc();
                    return;
                }
            },
        };
        let Some(inbox) = routes.inboxes.get(&ufrag) else {
            routes.addresses.remove(&source);
            drop(routes);
            self.unrouted.inc();
            return;
        };
        let destination = self.destination(local, source);
        let datagram = Datagram { source, destination, at: Instant::now(), data: data.to_vec() };
        if inbox.try_send(datagram).is_err() {
            self.dropped.inc();
        }
    }

    /// The candidate address a datagram to the socket at `local` was sent to.
    fn destination(&self, local: SocketAddr, source: SocketAddr) -> SocketAddr {
        if !local.ip().is_unspecified() {
            return local;
        }
        let ip = self.hosts.iter().find(|ip| ip.is_ipv4() == source.is_ipv4()).or(self.hosts.first());
        SocketAddr::new(ip.copied().unwrap_or(local.ip()), local.port())
    }
}

/// Reads one socket until it is dropped by every lease (range) or the task is aborted.
async fn read(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    let Ok(local) = socket.local_addr() else { return };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((len, source)) => shared.route(source, local, &buf[..len]),
            // ICMP errors of earlier sends surface here on Linux; the socket is fine.
            Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(error) => {
                tracing::warn!(%local, %error, "WebRTC media socket failed; its sessions will time out");
                return;
            }
        }
    }
}

/// One session's socket and inbox; dropping it forgets the session's routes (and, in range
/// mode, closes its socket).
pub(crate) struct Lease {
    pub(crate) socket: Arc<UdpSocket>,
    /// Host candidate addresses to offer.
    pub(crate) candidates: Vec<SocketAddr>,
    pub(crate) inbox: mpsc::Receiver<Datagram>,
    ufrag: String,
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut routes = self.shared.lock();
        routes.inboxes.remove(&self.ufrag);
        routes.addresses.retain(|_, ufrag| *ufrag != self.ufrag);
        drop(routes);
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
    }
}

impl MediaPorts {
    /// Stops reading the single port (shutdown).
    pub fn close(&self) {
        if let Some((_, reader)) = &self.single {
            reader.abort();
        }
    }
}
