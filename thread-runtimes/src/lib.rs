//! Threads that each run a single-threaded tokio runtime, for connections that stay on the thread
//! that took them.
//!
//! nginx serves a connection from one worker process for its whole life; these threads do the
//! same for the RTMP ingest's connections and the edge's viewer connections. A connection's
//! reads and writes then never wake another thread or move its task between cores: on one shared
//! work-stealing runtime, two threads serving 256 busy edge connections spent about 40% more CPU
//! per 100 KB hit than one thread did. Each new connection goes to the thread with the fewest
//! open ones, counted in a gauge per thread.

use std::io;

use prometheus::IntGauge;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// The running threads; they end when this is dropped, and whatever their runtimes still run is
/// dropped with them.
pub struct ThreadRuntimes {
    threads: Vec<(Handle, IntGauge)>,
    stop: CancellationToken,
}

impl ThreadRuntimes {
    /// Start `count` threads (at least one) named `{name}-{i}`. `open(i, thread_name)` is the
    /// gauge that counts thread `i`'s open connections.
    pub fn start(name: &str, count: usize, open: impl Fn(usize, &str) -> IntGauge) -> io::Result<Self> {
        let mut runtimes = ThreadRuntimes { threads: Vec::with_capacity(count.max(1)), stop: CancellationToken::new() };
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let handle = runtime.handle().clone();
            let stop = runtimes.stop.clone();
            let thread = format!("{name}-{i}");
            // On an error the threads started so far end as `runtimes` is dropped.
            std::thread::Builder::new().name(thread.clone()).spawn(move || runtime.block_on(stop.cancelled_owned()))?;
            runtimes.threads.push((handle, open(i, &thread)));
        }
        Ok(runtimes)
    }

    /// The runtime of the thread with the fewest open connections, and the count of a new one on
    /// it: hold the [`OpenConnection`] for as long as the connection lives.
    pub fn least_busy(&self) -> (&Handle, OpenConnection) {
        let (runtime, open) = self.threads.iter().min_by_key(|(_, open)| open.get()).expect("at least one thread");
        (runtime, OpenConnection::new(open.clone()))
    }
}

impl Drop for ThreadRuntimes {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Counts a connection on its thread while it lives, also when its task is aborted or never runs.
pub struct OpenConnection(IntGauge);

impl OpenConnection {
    fn new(open: IntGauge) -> Self {
        open.inc();
        OpenConnection(open)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauges(count: usize) -> Vec<IntGauge> {
        (0..count).map(|i| IntGauge::new(format!("open_{i}"), "open connections").unwrap()).collect()
    }

    #[test]
    fn connections_go_to_the_least_busy_thread_and_count_while_held() {
        let open = gauges(2);
        let threads = ThreadRuntimes::start("test", 2, |i, _| open[i].clone()).unwrap();
        let (_, first) = threads.least_busy();
        let (_, second) = threads.least_busy();
        assert_eq!((open[0].get(), open[1].get()), (1, 1), "one on each thread");
        drop(first);
        let (_, third) = threads.least_busy();
        assert_eq!((open[0].get(), open[1].get()), (1, 1), "the freed thread takes the next");
        drop((second, third));
        assert_eq!((open[0].get(), open[1].get()), (0, 0));
    }

    #[test]
    fn tasks_run_on_the_named_threads_until_dropped() {
        let open = gauges(1);
        let threads = ThreadRuntimes::start("named", 0, |_, name| {
            assert_eq!(name, "named-0");
            open[0].clone()
        })
        .unwrap();
        let (runtime, _open) = threads.least_busy();
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.spawn(async move { tx.send(std::thread::current().name().map(str::to_owned)).unwrap() });
        assert_eq!(rx.recv().unwrap().as_deref(), Some("named-0"), "zero threads asked for means one");

        // A task still pending when the threads stop is dropped with its runtime.
        let (dropped_tx, dropped_rx) = std::sync::mpsc::channel::<()>();
        runtime.spawn(async move {
            let _dropped = dropped_tx;
            std::future::pending::<()>().await
        });
        drop(threads);
        assert!(dropped_rx.recv().is_err(), "the pending task was dropped");
    }
}
