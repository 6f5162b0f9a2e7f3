//! A keep-alive HTTP/1.1 connection per player lane (hyper's client connection over a tokio
//! socket, optionally bound to a chosen source address), as a browser keeps one per loader.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use tokio::net::{TcpSocket, TcpStream};
use url::Url;

/// Largest playlist body kept; a longer one is an error (a playlist of a live window is a few KB).
pub(crate) const MAX_PLAYLIST_BYTES: usize = 4 * 1024 * 1024;

/// How one fetch went.
#[derive(Debug)]
pub(crate) enum Fetched {
    /// 2xx: the body if asked to keep it, and its length.
    Ok {
        body: Vec<u8>,
        bytes: u64,
    },
    /// Any other status (the body is read and dropped, so the connection stays usable).
    Status(u16),
    Failed(String),
}

/// One lane's connection, opened on first use and again after the server closes it.
pub(crate) struct Lane {
    target: SocketAddr,
    source: Option<IpAddr>,
    sender: Option<SendRequest<Empty<Bytes>>>,
    /// Connections opened, counted where the lane's owner can read it even while a request
    /// holds the lane (1 per lane while keep-alive holds).
    connects: Arc<AtomicU64>,
}

impl Lane {
    pub(crate) fn new(target: SocketAddr, source: Option<IpAddr>, connects: Arc<AtomicU64>) -> Self {
        Lane { target, source, sender: None, connects }
    }

    async fn connect(&mut self) -> Result<(), String> {
        let socket = if self.target.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() };
        let socket = socket.map_err(|e| format!("socket: {e}"))?;
        if let Some(ip) = self.source {
            socket.bind(SocketAddr::new(ip, 0)).map_err(|e| format!("bind {ip}: {e}"))?;
        }
        let stream: TcpStream =
            socket.connect(self.target).await.map_err(|e| format!("connect {}: {e}", self.target))?;
        let _ = stream.set_nodelay(true);
        let io = hyper_util::rt::TokioIo::new(stream);
        let (sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.connects.fetch_add(1, Ordering::Relaxed);
        self.sender = Some(sender);
        Ok(())
    }

    /// GETs `url`, keeping the body when `keep_body`; bounded by `timeout` from start to the last
    /// body byte.
    pub(crate) async fn get(&mut self, url: &Url, keep_body: bool, timeout: Duration) -> Fetched {
        match tokio::time::timeout(timeout, self.get_inner(url, keep_body)).await {
            Ok(Ok(fetched)) => fetched,
            Ok(Err(why)) => {
                self.sender = None;
                Fetched::Failed(why)
            }
            Err(_) => {
                // The connection may still carry the late answer: start afresh.
                self.sender = None;
                Fetched::Failed(format!("no answer within {timeout:?}"))
            }
        }
    }

    async fn get_inner(&mut self, url: &Url, keep_body: bool) -> Result<Fetched, String> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.connect().await?;
        }
        if self.sender.as_mut().ok_or("no connection")?.ready().await.is_err() {
            // The server closed the idle connection: open another.
            self.connect().await?;
        }
        let sender = self.sender.as_mut().ok_or("no connection")?;
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, host)
            .header(hyper::header::USER_AGENT, "bitriver-load")
            .body(Empty::new())
            .map_err(|e| format!("request: {e}"))?;
        let response = sender.send_request(request).await.map_err(|e| format!("request: {e}"))?;
        let status = response.status();
        let mut body = response.into_body();
        let mut kept = Vec::new();
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("body: {e}"))?;
            if let Some(data) = frame.data_ref() {
                bytes += data.len() as u64;
                if keep_body && status.is_success() {
                    if kept.len() + data.len() > MAX_PLAYLIST_BYTES {
                        return Err(format!("body larger than {MAX_PLAYLIST_BYTES} bytes"));
                    }
                    kept.extend_from_slice(data);
                }
            }
        }
        Ok(if status.is_success() { Fetched::Ok { body: kept, bytes } } else { Fetched::Status(status.as_u16()) })
    }
}

/// The socket address of `url`'s host and port (resolved once: a load test aims at one address).
pub(crate) async fn resolve(url: &Url) -> anyhow::Result<SocketAddr> {
    anyhow::ensure!(url.scheme() == "http", "{url}: only http:// is supported (point at the edge's plain-HTTP port)");
    let host = url.host_str().ok_or_else(|| anyhow::anyhow!("{url}: no host"))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    tokio::net::lookup_host((host, port)).await?.next().ok_or_else(|| anyhow::anyhow!("{host}: no address"))
}
