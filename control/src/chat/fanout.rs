//! One node's chat fan-out: applied catalog commands in, framed bytes out, per channel.
//!
//! A single dispatcher task per node subscribes to the catalog's applied-command broadcast. For
//! each command it finds the channel the command belongs to ([`chat_event`]); if no socket on this
//! node watches that channel it stops there. Otherwise it builds the socket frame once (one
//! catalog read for the author's display name, one JSON serialization, one WebSocket header;
//! `settings` twice, with and without the blocked words). Sockets never see another channel's
//! traffic.
//!
//! Events are gathered per channel until the next tick ([`next_flush`]), concatenated once, and
//! written to each socket of the channel by the dispatcher itself ([`sweep`], [`SocketOut::deliver`]):
//! one system call per socket and tick, no task woken where the kernel takes the bytes at once.
//! The frames on the wire are unchanged and in catalog order (a moderator's delete stays after
//! the message it deletes). A channel's deletion goes at once. The tick is [`TICK`] (20 ms) while
//! the node has few sockets and grows with their number ([`tick_for`]): every tick costs each
//! socket a system call, on the node and on the client, so a node with 5,000 sockets batches for
//! 50 ms rather than spend its cores on 250,000 writes a second.
//!
//! The node's shutdown reaches sockets through the dispatcher: once it has sent what it gathered,
//! it ends every socket ([`End::ShuttingDown`]). A channel's sockets are registered when a socket
//! subscribes and taken off by [`Subscription`]'s drop. The dispatcher starts with the first
//! socket and ends when the catalog closes (or the hub is gone); the next socket starts it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use raft::store::AppliedEvent;
use raft::Catalog;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{sleep_until, Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::event::{chat_event, ChatEvent, MessageView, ServerFrame, SettingsView};
use super::out::{ChannelFrame, Delivered, End, SocketOut, Tick};
use crate::metrics::ApiMetrics;

/// Events of a channel gathered for at most this long go to its sockets together: a socket then
/// takes one write (one system call for all of them) per tick, not one per message.
pub(crate) const TICK: Duration = Duration::from_millis(20);

/// Socket writes a second the ticks aim at, over all of a node's chat sockets: one tick's
/// frames cost each socket about 4 µs of the node's CPU and as much of the kernel's (loopback
/// measurement, `chat-bench`), so this is about half a core at full chat traffic.
const SOCKET_WRITES_PER_SECOND: u64 = 100_000;

/// The longest tick: beyond this chat stops feeling live, and a node this full should shed sockets.
const MAX_TICK: Duration = Duration::from_millis(200);

/// How long events wait for company with `sockets` chat sockets open on the node: [`TICK`], or
/// as long as keeps the node at [`SOCKET_WRITES_PER_SECOND`] if every socket took a tick.
pub(crate) fn tick_for(sockets: usize) -> Duration {
    let spread = Duration::from_micros(sockets as u64 * 1_000_000 / SOCKET_WRITES_PER_SECOND);
    spread.clamp(TICK, MAX_TICK)
}

/// The sockets of one channel on this node. Replaced, never changed in place, so that a sweep
/// goes over its own copy without holding the routes' lock.
type Sockets = Arc<Vec<Arc<SocketOut>>>;

/// The channels' sockets of one node and its dispatcher.
#[derive(Debug)]
pub(crate) struct Fanout {
    routes: Mutex<Routes>,
    /// Once cancelled, every socket closes and new subscriptions are closed from the start.
    shutdown: CancellationToken,
}

#[derive(Debug, Default)]
struct Routes {
    channels: HashMap<String, Sockets>,
    /// Sockets over all channels.
    sockets: usize,
    /// A dispatcher task is running (or starting) for this fan-out.
    dispatching: bool,
}

impl Fanout {
    pub(crate) fn new(shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Fanout { routes: Mutex::new(Routes::default()), shutdown })
    }

    fn routes(&self) -> MutexGuard<'_, Routes> {
        // The map stays consistent even if a holder panicked: every update is a single insert/remove.
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Send the events of `channel_id` from now on to `out`. The dispatcher is subscribed to the
    /// catalog before this returns, so an event applied after this call cannot be missed: a
    /// socket that subscribes first and then reads the history has no gap between the two.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        catalog: &Catalog,
        metrics: &ApiMetrics,
        channel_id: &str,
        out: Arc<SocketOut>,
    ) -> Subscription {
        let mut routes = self.routes();
        let subscription = Subscription { fanout: self.clone(), channel_id: channel_id.to_owned(), out: out.clone() };
        if self.shutdown.is_cancelled() {
            // The dispatcher is stopping or stopped (it cancels under this lock's protection).
            out.end(End::ShuttingDown);
            return subscription;
        }
        if !routes.dispatching {
            routes.dispatching = true;
            let applied = catalog.subscribe();
            let task = dispatch(Arc::downgrade(self), catalog.clone(), metrics.clone(), applied, self.shutdown.clone());
            // A sweep writes thousands of sockets in one poll of this task: under tokio's
            // cooperative budget (128 I/O operations a poll) every write after the first 128
            // would look blocked and go the slow way, through the socket's task.
            tokio::spawn(tokio::task::unconstrained(task));
        }
        let sockets = routes.channels.entry(channel_id.to_owned()).or_default();
        let mut grown = Vec::with_capacity(sockets.len() + 1);
        grown.extend(sockets.iter().cloned());
        grown.push(out);
        *sockets = Arc::new(grown);
        routes.sockets += 1;
        subscription
    }

    /// Channels with at least one socket on this node (those the dispatcher serializes for).
    pub(crate) fn watched_channels(&self) -> usize {
        self.routes().channels.len()
    }

    /// How long the events of a tick starting now gather, for the sockets open now.
    fn tick(&self) -> Duration {
        tick_for(self.routes().sockets)
    }

    /// Take `out` off `channel_id`'s sockets, and the channel off the map with its last socket.
    fn release(&self, channel_id: &str, out: &Arc<SocketOut>) {
        let mut routes = self.routes();
        let Some(sockets) = routes.channels.get_mut(channel_id) else { return };
        let Some(at) = sockets.iter().position(|s| Arc::ptr_eq(s, out)) else { return };
        if sockets.len() == 1 {
            routes.channels.remove(channel_id);
        } else {
            let mut shrunk = Vec::clone(sockets);
            shrunk.swap_remove(at);
            *sockets = Arc::new(shrunk);
        }
        routes.sockets -= 1;
    }

    /// Turn one applied command into at most one frame, for the sockets of its channel.
    fn frame(&self, catalog: &Catalog, applied: &AppliedEvent) -> Option<(String, ChannelFrame)> {
        let (channel_id, event) = chat_event(applied)?;
        if !self.routes().channels.contains_key(channel_id) {
            return None; // no socket on this node watches that channel: nothing to build
        }
        let frame = match event {
            ChatEvent::Message(m) => {
                let seq = m.seq;
                let message = catalog.read(|s| MessageView::new(m, s));
                ChannelFrame::Message { seq, frame: ServerFrame::Message { message }.to_wire() }
            }
            ChatEvent::Deleted { message_id } => ChannelFrame::Notice(ServerFrame::Deleted { message_id }.to_wire()),
            ChatEvent::Ban { user_id, until } => ChannelFrame::Notice(ServerFrame::Ban { user_id, until }.to_wire()),
            ChatEvent::Unban { user_id } => ChannelFrame::Notice(ServerFrame::Unban { user_id }.to_wire()),
            ChatEvent::Settings(settings) => ChannelFrame::Settings {
                public: ServerFrame::Settings { settings: SettingsView::new(settings.clone(), false) }.to_wire(),
                moderator: ServerFrame::Settings { settings: SettingsView::new(settings, true) }.to_wire(),
            },
            ChatEvent::ChannelDeleted => ChannelFrame::ChannelDeleted,
        };
        Some((channel_id.to_owned(), frame))
    }

    /// Send each channel's gathered frames to its sockets, framed once per channel.
    async fn flush(&self, pending: &mut HashMap<String, Vec<ChannelFrame>>, metrics: &ApiMetrics) {
        for (channel_id, frames) in pending.drain() {
            let Some(sockets) = self.routes().channels.get(&channel_id).cloned() else { continue };
            sweep_shared(Arc::new(Tick::new(frames)), sockets, metrics).await;
        }
    }

    /// The dispatcher missed `missed` catalog commands: every socket may have missed events.
    async fn publish_lagged(&self, missed: u64, metrics: &ApiMetrics) {
        let channels: Vec<Sockets> = self.routes().channels.values().cloned().collect();
        let tick = Arc::new(Tick::new(vec![ChannelFrame::Notice(ServerFrame::Lagged { missed }.to_wire())]));
        for sockets in channels {
            sweep_shared(tick.clone(), sockets, metrics).await;
        }
    }

    /// The dispatcher ended: every socket closes as on shutdown.
    fn stopped(&self) {
        let mut routes = self.routes();
        routes.dispatching = false;
        for sockets in routes.channels.values() {
            for out in sockets.iter() {
                out.end(End::ShuttingDown);
            }
        }
        routes.channels.clear();
        routes.sockets = 0;
    }
}

/// Sockets one thread sweeps before the sweep is shared among the runtime's threads.
const SWEEP_SHARE: usize = 1024;

/// [`sweep`] a channel's sockets, on several of the runtime's threads when they are many. Returns
/// once every socket is written (or queued), so ticks reach each socket in order.
async fn sweep_shared(tick: Arc<Tick>, sockets: Sockets, metrics: &ApiMetrics) {
    let threads = tokio::runtime::Handle::current().metrics().num_workers();
    let parts = (sockets.len() / SWEEP_SHARE).clamp(1, threads);
    if parts == 1 {
        sweep(&tick, &sockets, metrics);
        return;
    }
    // Every part is a task of its own: one swept here would keep the spawned ones in this thread's
    // next-task slot, which other threads do not steal from, until it was done.
    let per = sockets.len().div_ceil(parts);
    let helpers: Vec<_> = (0..parts)
        .map(|part| {
            let (tick, sockets, metrics) = (tick.clone(), sockets.clone(), metrics.clone());
            let range = part * per..((part + 1) * per).min(sockets.len());
            tokio::spawn(tokio::task::unconstrained(async move { sweep(&tick, &sockets[range], &metrics) }))
        })
        .collect();
    for helper in helpers {
        if let Err(e) = helper.await {
            tracing::error!(error = %e, "a chat sweep failed");
        }
    }
}

/// Write one tick to each of a channel's sockets, straight into the kernel's buffers where they
/// have room (see [`super::out`]).
fn sweep(tick: &Arc<Tick>, sockets: &[Arc<SocketOut>], metrics: &ApiMetrics) {
    let (mut direct, mut writes, mut messages) = (0, 0, 0);
    for out in sockets {
        let (delivered, sent) = out.deliver(tick);
        messages += sent;
        match delivered {
            Delivered::Direct => {
                direct += 1;
                writes += 1;
            }
            Delivered::Queued => writes += 1,
            Delivered::Held | Delivered::Dropped => {}
        }
    }
    metrics.chat_messages_out.inc_by(messages);
    metrics.chat_direct_writes.inc_by(direct);
    if tick.events > 1 {
        // Each of these writes carried the tick's frames together.
        metrics.chat_coalesced_writes.inc_by(writes);
    }
}

/// The node's one reader of the catalog's applied commands for chat.
async fn dispatch(
    fanout: Weak<Fanout>,
    catalog: Catalog,
    metrics: ApiMetrics,
    mut applied: broadcast::Receiver<Arc<AppliedEvent>>,
    shutdown: CancellationToken,
) {
    // Frames built but not sent yet, per channel, and when they go: one tick after the last
    // flush began, or at once when that was longer ago.
    let mut pending: HashMap<String, Vec<ChannelFrame>> = HashMap::new();
    let mut due: Option<Instant> = None;
    let mut last_flush: Option<Instant> = None;
    let mut stopping = std::pin::pin!(shutdown.cancelled());
    loop {
        let received = tokio::select! {
            received = applied.recv() => Some(received),
            () = &mut stopping => Some(Err(RecvError::Closed)),
            () = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => None,
        };
        let Some(fanout) = fanout.upgrade() else { return };
        match received {
            None => {
                last_flush = Some(Instant::now());
                fanout.flush(&mut pending, &metrics).await;
                due = None;
            }
            Some(Ok(event)) => {
                let Some((channel_id, frame)) = fanout.frame(&catalog, &event) else { continue };
                let closing = matches!(frame, ChannelFrame::ChannelDeleted);
                pending.entry(channel_id).or_default().push(frame);
                if closing {
                    fanout.flush(&mut pending, &metrics).await;
                    due = None;
                } else {
                    due.get_or_insert_with(|| next_flush(last_flush, fanout.tick()));
                }
            }
            Some(Err(RecvError::Lagged(missed))) => {
                // The receiver goes on from the oldest command the catalog still holds; the sockets
                // are told they may have missed events and can refetch the history.
                tracing::warn!(missed, "chat dispatcher fell behind the catalog");
                fanout.flush(&mut pending, &metrics).await;
                due = None;
                fanout.publish_lagged(missed, &metrics).await;
            }
            Some(Err(RecvError::Closed)) => {
                fanout.flush(&mut pending, &metrics).await;
                fanout.stopped();
                return;
            }
        }
    }
}

/// When events that find nothing pending go out: a tick after the last flush began, so that a
/// node writes each socket at most once a tick, and at once when the last flush is older than
/// that (the first message after a quiet spell waits for nothing). Events that arrive during a
/// sweep wait only for the rest of the tick the sweep started, not a tick after it ends.
fn next_flush(last_flush: Option<Instant>, tick: Duration) -> Instant {
    let now = Instant::now();
    last_flush.map_or(now, |last| (last + tick).max(now))
}

/// One socket's place among its channel's; leaving takes it off (and the channel with its last).
#[derive(Debug)]
pub(crate) struct Subscription {
    fanout: Arc<Fanout>,
    channel_id: String,
    out: Arc<SocketOut>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.fanout.release(&self.channel_id, &self.out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_grows_with_the_sockets_of_the_node() {
        assert_eq!(tick_for(0), TICK);
        assert_eq!(tick_for(1_000), TICK, "a thousand sockets write 50,000 times a second at 20 ms");
        assert_eq!(tick_for(5_000), Duration::from_millis(50));
        assert_eq!(tick_for(10_000), Duration::from_millis(100));
        assert_eq!(tick_for(1_000_000), MAX_TICK);
    }

    #[test]
    fn events_go_at_once_after_a_quiet_tick_and_otherwise_with_the_next_one() {
        let tick = Duration::from_millis(50);
        let first = next_flush(None, tick);
        assert!(first <= Instant::now(), "the node's first event waits for nothing");
        let recent = Instant::now();
        assert_eq!(next_flush(Some(recent), tick), recent + tick, "a tick after the last flush began");
        let quiet = Instant::now() - tick * 2;
        assert!(next_flush(Some(quiet), tick) <= Instant::now(), "the last flush is a tick ago: at once");
    }
}
