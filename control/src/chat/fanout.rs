//! One node's chat fan-out: applied catalog commands in, ready-to-send frames out, per channel.
//!
//! A single dispatcher task per node subscribes to the catalog's applied-command broadcast. For
//! each command it finds the channel the command belongs to ([`chat_event`]); if no socket on this
//! node watches that channel it stops there. Otherwise it builds the socket frame once (one
//! catalog read for the author's display name, one JSON serialization; `settings` twice, with and
//! without the blocked words) and sends it, as an `Arc<ChannelFrame>`, on that channel's own
//! broadcast. Each socket holds a receiver of its channel only, so a socket costs one `Arc` clone
//! and one cheap `Message` clone (a reference-counted byte buffer) per event of its channel, and
//! never sees another channel's traffic.
//!
//! Events are gathered per channel for one tick after the first and then sent as one broadcast
//! item: at 100 messages a second a socket wakes and writes about 50 times a second with two
//! messages each rather than 100 times with one, the frames on the wire unchanged and in catalog
//! order (a moderator's delete stays after the message it deletes). A channel's deletion goes at
//! once. The tick is [`TICK`] (20 ms) while the node has few sockets and grows with their number
//! ([`tick_for`]): every tick costs each socket a wake-up and a system call, on the node and on
//! the client, so a node with 5,000 sockets batches for 50 ms rather than spend its cores on
//! 250,000 writes a second and queue everything behind them.
//!
//! The node's shutdown signal reaches sockets through the dispatcher: it closes every channel's
//! broadcast, so each socket ends on its receiver closing rather than polling (and locking) a
//! shared signal of its own on every tick.
//!
//! The channel broadcasts are created when a socket subscribes and removed when the last receiver
//! of a channel goes ([`Subscription`]'s drop, or a send that finds nobody listening). The
//! dispatcher starts with the first socket and ends when the catalog closes (or the hub is gone);
//! the next socket starts it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use axum::extract::ws::Message;
use raft::store::AppliedEvent;
use raft::Catalog;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{sleep_until, Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::event::{chat_event, ChatEvent, MessageView, ServerFrame, SettingsView};

/// One event of one channel, serialized once for every socket of that channel on this node.
#[derive(Debug)]
pub(crate) enum ChannelFrame {
    /// A posted message; `seq` lets a socket skip what its history already held.
    Message { seq: u64, frame: Message },
    /// `deleted`, `ban`, `unban`, or `lagged` (the dispatcher itself fell behind the catalog).
    Notice(Message),
    /// `settings`: moderators see the blocked words, everyone else does not.
    Settings { public: Message, moderator: Message },
    /// The channel is gone: its sockets close.
    ChannelDeleted,
    /// Several events of one tick, in order (never nested; a `ChannelDeleted` comes last).
    Batch(Vec<ChannelFrame>),
}

/// Events of a channel gathered for at most this long go to its sockets together: a socket then
/// wakes and writes (one system call for all of them) once per tick, not once per message.
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

type Sender = broadcast::Sender<Arc<ChannelFrame>>;

/// The per-channel broadcasts of one node and its dispatcher.
#[derive(Debug)]
pub(crate) struct Fanout {
    /// Events one channel's broadcast keeps for its slowest socket.
    backlog: usize,
    routes: Mutex<Routes>,
    /// Once cancelled, every broadcast closes and new subscriptions are closed from the start.
    shutdown: CancellationToken,
}

#[derive(Debug, Default)]
struct Routes {
    channels: HashMap<String, Sender>,
    /// A dispatcher task is running (or starting) for this fan-out.
    dispatching: bool,
}

impl Fanout {
    pub(crate) fn new(backlog: usize, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Fanout { backlog: backlog.max(1), routes: Mutex::new(Routes::default()), shutdown })
    }

    fn routes(&self) -> MutexGuard<'_, Routes> {
        // The map stays consistent even if a holder panicked: every update is a single insert/remove.
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Receive the events of `channel_id` from now on. The dispatcher is subscribed to the catalog
    /// before this returns, so an event applied after this call cannot be missed: a socket that
    /// subscribes first and then reads the history has no gap between the two.
    pub(crate) fn subscribe(self: &Arc<Self>, catalog: &Catalog, channel_id: &str) -> Subscription {
        let mut routes = self.routes();
        if self.shutdown.is_cancelled() {
            // The dispatcher is stopping or stopped (it cancels under this lock's protection).
            return Subscription { receiver: None, fanout: self.clone(), channel_id: channel_id.to_owned() };
        }
        if !routes.dispatching {
            routes.dispatching = true;
            let applied = catalog.subscribe();
            tokio::spawn(dispatch(Arc::downgrade(self), catalog.clone(), applied, self.shutdown.clone()));
        }
        let backlog = self.backlog;
        let receiver = match routes.channels.get(channel_id) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = broadcast::channel(backlog);
                routes.channels.insert(channel_id.to_owned(), sender);
                receiver
            }
        };
        Subscription { receiver: Some(receiver), fanout: self.clone(), channel_id: channel_id.to_owned() }
    }

    /// Channels with at least one socket on this node (those the dispatcher serializes for).
    pub(crate) fn watched_channels(&self) -> usize {
        self.routes().channels.len()
    }

    /// How long the events of a tick starting now gather, for the sockets open now.
    fn tick(&self) -> Duration {
        tick_for(self.routes().channels.values().map(Sender::receiver_count).sum())
    }

    /// Drop the broadcast of `channel_id` if nobody listens any more. Subscribing happens under the
    /// same lock, so a socket cannot attach to a broadcast in the moment it is removed.
    fn release(&self, channel_id: &str) {
        let mut routes = self.routes();
        if routes.channels.get(channel_id).is_some_and(|s| s.receiver_count() == 0) {
            routes.channels.remove(channel_id);
        }
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
                ChannelFrame::Message { seq, frame: ServerFrame::Message { message }.to_message() }
            }
            ChatEvent::Deleted { message_id } => ChannelFrame::Notice(ServerFrame::Deleted { message_id }.to_message()),
            ChatEvent::Ban { user_id, until } => ChannelFrame::Notice(ServerFrame::Ban { user_id, until }.to_message()),
            ChatEvent::Unban { user_id } => ChannelFrame::Notice(ServerFrame::Unban { user_id }.to_message()),
            ChatEvent::Settings(settings) => ChannelFrame::Settings {
                public: ServerFrame::Settings { settings: SettingsView::new(settings.clone(), false) }.to_message(),
                moderator: ServerFrame::Settings { settings: SettingsView::new(settings, true) }.to_message(),
            },
            ChatEvent::ChannelDeleted => ChannelFrame::ChannelDeleted,
        };
        Some((channel_id.to_owned(), frame))
    }

    /// Send each channel's gathered frames to its sockets, one broadcast item per channel.
    fn flush(&self, pending: &mut HashMap<String, Vec<ChannelFrame>>) {
        for (channel_id, mut frames) in pending.drain() {
            let Some(sender) = self.routes().channels.get(&channel_id).cloned() else { continue };
            let frame = match frames.len() {
                1 => frames.pop().expect("one frame"),
                _ => ChannelFrame::Batch(frames),
            };
            if sender.send(Arc::new(frame)).is_err() {
                // Every socket left since the frames were built.
                self.release(&channel_id);
            }
        }
    }

    /// The dispatcher missed `missed` catalog commands: every socket may have missed events.
    fn publish_lagged(&self, missed: u64) {
        let senders: Vec<Sender> = self.routes().channels.values().cloned().collect();
        let frame = Arc::new(ChannelFrame::Notice(ServerFrame::Lagged { missed }.to_message()));
        for sender in senders {
            let _ = sender.send(frame.clone());
        }
    }

    /// The dispatcher ended: close every channel's broadcast (its sockets close as on shutdown).
    fn stopped(&self) {
        let mut routes = self.routes();
        routes.dispatching = false;
        routes.channels.clear();
    }
}

/// The node's one reader of the catalog's applied commands for chat.
async fn dispatch(
    fanout: Weak<Fanout>,
    catalog: Catalog,
    mut applied: broadcast::Receiver<Arc<AppliedEvent>>,
    shutdown: CancellationToken,
) {
    // Frames built but not sent yet, per channel, and when they go: one tick after the first.
    let mut pending: HashMap<String, Vec<ChannelFrame>> = HashMap::new();
    let mut due: Option<Instant> = None;
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
                fanout.flush(&mut pending);
                due = None;
            }
            Some(Ok(event)) => {
                let Some((channel_id, frame)) = fanout.frame(&catalog, &event) else { continue };
                let closing = matches!(frame, ChannelFrame::ChannelDeleted);
                pending.entry(channel_id).or_default().push(frame);
                if closing {
                    fanout.flush(&mut pending);
                    due = None;
                } else {
                    due.get_or_insert_with(|| Instant::now() + fanout.tick());
                }
            }
            Some(Err(RecvError::Lagged(missed))) => {
                // The receiver goes on from the oldest command the catalog still holds; the sockets
                // are told they may have missed events and can refetch the history.
                tracing::warn!(missed, "chat dispatcher fell behind the catalog");
                fanout.flush(&mut pending);
                due = None;
                fanout.publish_lagged(missed);
            }
            Some(Err(RecvError::Closed)) => {
                fanout.flush(&mut pending);
                fanout.stopped();
                return;
            }
        }
    }
}

/// One socket's receiver of its channel's frames; leaving removes the channel's broadcast when it
/// was the last.
#[derive(Debug)]
pub(crate) struct Subscription {
    /// Always `Some` until drop, which takes it out to drop it before releasing the channel.
    receiver: Option<broadcast::Receiver<Arc<ChannelFrame>>>,
    fanout: Arc<Fanout>,
    channel_id: String,
}

impl Subscription {
    pub(crate) async fn recv(&mut self) -> Result<Arc<ChannelFrame>, RecvError> {
        match self.receiver.as_mut() {
            Some(receiver) => receiver.recv().await,
            None => Err(RecvError::Closed),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.receiver.take());
        self.fanout.release(&self.channel_id);
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
}
