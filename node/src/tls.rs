//! HTTPS for the HTTP listener when `--tls-cert/--tls-key` are given (rustls, no OpenSSL).

use std::net::SocketAddr;
use std::sync::Arc;

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
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = stop.cancelled() => return Ok(()),
        };
        let acceptor = acceptor.clone();
        // `IntoMakeServiceWithConnectInfo` is always ready and infallible.
        let Ok(service) = make_service.call(peer).await;
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await {
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
