//! One shape for everything the node serves.
//!
//! Every listener is a [`Service`]: a name (as `/healthz` lists it), the address it is bound to,
//! and the task serving it. Every serve function, whatever its crate (`media` ingest, the `cache`
//! edge, the HTTP API, chat sockets), takes the same stop signal, a [`CancellationToken`]: when it
//! is cancelled a service stops accepting and winds down what it has in flight within its own
//! bound. The node holds the one token ([`Services::stop`]); how it stops ([`Shutdown`]) only
//! decides whether it waits for the wind-down or aborts.
//!
//! ```text
//!   SIGTERM -> Shutdown::Graceful --+                       +--> http   (drain)
//!                                   +--> token.cancel() ----+--> rtmp   (sessions ended)
//!   SIGINT  -> Shutdown::Fast ------+                       +--> srt    (sessions ended)
//!                                                           +--> edge   (drain)
//!   Graceful: wait for every task (one deadline), then stop the catalog. Fast: abort them.
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How the node should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Stop accepting, finish in-flight requests, then stop the catalog (SIGTERM).
    Graceful,
    /// Stop now (SIGINT). Acknowledged catalog writes are already on disk.
    Fast,
}

/// One listener and the task serving it until the node's stop signal is cancelled.
pub struct Service {
    pub name: &'static str,
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

/// The node's services and their one stop signal.
pub struct Services {
    stop: CancellationToken,
    running: Vec<Service>,
    /// The first error of a service that ended on its own (each sends at most one).
    failed: (mpsc::Sender<anyhow::Error>, mpsc::Receiver<anyhow::Error>),
}

impl Default for Services {
    fn default() -> Self {
        Services { stop: CancellationToken::new(), running: Vec::new(), failed: mpsc::channel(1) }
    }
}

impl Services {
    /// The stop signal to hand every serve function.
    pub fn stop(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Spawns `serve` as the service `name` on `addr`. `serve` returns once the stop signal is
    /// cancelled (after winding down); an error it returns stops the node.
    pub fn spawn(
        &mut self,
        name: &'static str,
        addr: SocketAddr,
        serve: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        let failed = self.failed.0.clone();
        let task = tokio::spawn(async move {
            if let Err(error) = serve.await {
                // Only the first failure is kept: the node stops on it.
                let _ = failed.try_send(error.context(format!("{name} service")));
            }
        });
        self.running.push(Service { name, addr, task });
    }

    /// (name, address) of every service, for `/healthz`.
    pub fn listeners(&self) -> impl Iterator<Item = (&'static str, SocketAddr)> + '_ {
        self.running.iter().map(|s| (s.name, s.addr))
    }

    /// Waits until `signal` says how to stop, or until a service fails (then the node stops
    /// gracefully and returns its error).
    pub async fn serve_until(&mut self, signal: impl Future<Output = Shutdown>) -> (Shutdown, anyhow::Result<()>) {
        tokio::select! {
            how = signal => (how, Ok(())),
            Some(error) = self.failed.1.recv() => (Shutdown::Graceful, Err(error)),
        }
    }

    /// Cancels the stop signal. Graceful: waits for every service to wind down (side by side, at
    /// most `grace` in all). Fast: aborts them.
    pub async fn shut_down(self, how: Shutdown, grace: Duration) {
        self.stop.cancel();
        let deadline = tokio::time::Instant::now() + grace;
        for service in self.running {
            if how == Shutdown::Fast {
                service.task.abort();
                continue;
            }
            match tokio::time::timeout_at(deadline, service.task).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(service = service.name, %error, "service task failed"),
                Err(_) => tracing::warn!(service = service.name, "service did not stop in time"),
            }
        }
    }
}
