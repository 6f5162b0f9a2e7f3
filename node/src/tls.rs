//! HTTPS for the HTTP listener when `--tls-cert/--tls-key` are given (rustls, no OpenSSL).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::config::TlsFiles;

/// RTMPS: RTMP inside TLS with the node's certificate (`--rtmps-addr`).
pub(crate) struct RtmpsTransport(tokio_rustls::TlsAcceptor);

impl RtmpsTransport {
    pub(crate) fn new(files: &TlsFiles) -> anyhow::Result<Self> {
        let mut config = server_config(files)?;
        // Encoders offer no ALPN for RTMPS.
        config.alpn_protocols.clear();
        Ok(RtmpsTransport(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }
}

impl media::ingest::RtmpTransport for RtmpsTransport {
    type Stream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

    fn name(&self) -> &'static str {
        "RTMPS"
    }

    async fn open(&self, tcp: tokio::net::TcpStream) -> std::io::Result<Self::Stream> {
        self.0.accept(tcp).await
    }
}

fn server_config(files: &TlsFiles) -> anyhow::Result<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("--tls-cert {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("--tls-cert {}", files.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&files.key).with_context(|| format!("--tls-key {}", files.key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("--tls-cert/--tls-key do not form a valid pair")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Accept TLS connections and serve `app` on each, until `stop` is cancelled.
pub(crate) async fn serve_https(
    listener: TcpListener,
    mut make_service: IntoMakeServiceWithConnectInfo<Router, SocketAddr>,
    files: &TlsFiles,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(files)?));
    let mut backoff = AcceptBackoff::default();
    loop {
        let (mut tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    backoff.on_success();
                    a
                }
                Err(e) => {
                    let pause = backoff.on_error();
                    tracing::warn!(error = %e, ?pause, "accept failed; pausing");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = stop.cancelled() => return Ok(()),
                    }
                }
            },
            () = stop.cancelled() => return Ok(()),
        };
        let acceptor = acceptor.clone();
        crate::http::no_delay(&mut tcp);
        // `IntoMakeServiceWithConnectInfo` is always ready and infallible.
        let Ok(service) = make_service.call(peer).await;
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) =
                builder.serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(service)).await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// How long the accept loop pauses after a failed accept. The usual failures (out of file
/// descriptors, out of memory) last until something else lets go, and `accept` fails again at
/// once: retrying without a pause spins a core and floods the log. The pause doubles per failure
/// in a row, from [`AcceptBackoff::FIRST`] up to [`AcceptBackoff::MAX`]; an accept that succeeds
/// starts over.
#[derive(Debug, Default)]
pub(crate) struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    /// An accept failed: the pause before the next one.
    #[must_use]
    pub(crate) fn on_error(&mut self) -> Duration {
        let pause = Self::FIRST.saturating_mul(1 << self.failures.min(16)).min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        pause
    }

    /// An accept succeeded.
    pub(crate) fn on_success(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_back_off_up_to_a_second_and_success_starts_over() {
        let mut backoff = AcceptBackoff::default();
        let pauses: Vec<u64> = (0..12).map(|_| backoff.on_error().as_millis() as u64).collect();
        assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000]);
        // However long the failures go on.
        for _ in 0..100 {
            assert_eq!(backoff.on_error(), AcceptBackoff::MAX);
        }
        backoff.on_success();
        assert_eq!(backoff.on_error(), AcceptBackoff::FIRST);
    }
}
