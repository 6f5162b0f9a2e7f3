//! The local admin socket (`<data>/admin.sock`, mode 0600): how the CLI reaches a running node.
//! Requests are the cluster protocol's, length-prefixed; filesystem permissions authenticate.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Catalog;
use crate::authz::Caller;
use crate::rpc::{Reply, Request, MAX_MESSAGE};

/// The admin socket path of a data dir (the CLI talks to a running node through it).
pub fn admin_socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.sock")
}

/// Peer name of requests from the local admin socket.
pub(super) const ADMIN_PEER: &str = "admin-socket";

/// Serve the local admin socket (`<data>/admin.sock`, mode 0600): the CLI's way into a running node.
pub(super) async fn serve_admin_socket(catalog: Catalog) {
    let path = admin_socket_path(&catalog.inner.config.data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "admin socket unavailable; CLI commands will work offline only");
            return;
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    while let Ok((mut stream, _)) = listener.accept().await {
        let catalog = catalog.clone();
        tokio::spawn(async move {
            let request = match read_frame(&mut stream).await {
                Ok(bytes) => crate::codec::decode::<Request>(&bytes),
                Err(_) => return,
            };
            let reply = match request {
                Ok(request) => catalog.handle(request, &Caller::Admin, ADMIN_PEER).await,
                Err(e) => Reply::Error(format!("malformed request: {e}")),
            };
            let _ = write_frame(&mut stream, &crate::codec::encode(&reply)).await;
        });
    }
}

async fn read_frame(stream: &mut tokio::net::UnixStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u32().await? as usize;
    if len > MAX_MESSAGE {
        return Err(std::io::Error::other("frame too large"));
    }
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame(stream: &mut tokio::net::UnixStream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_u32(bytes.len() as u32).await?;
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Send a request to the node running on `data_dir` through its admin socket.
pub async fn admin_call(data_dir: &Path, request: &Request) -> std::io::Result<Reply> {
    let mut stream = tokio::net::UnixStream::connect(admin_socket_path(data_dir)).await?;
    write_frame(&mut stream, &crate::codec::encode(request)).await?;
    let bytes = read_frame(&mut stream).await?;
    crate::codec::decode(&bytes).map_err(std::io::Error::other)
}
