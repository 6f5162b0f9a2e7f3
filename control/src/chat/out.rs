//! A chat socket's outgoing side, written from two places: the fan-out's sweep and the socket's
//! own task.
//!
//! A tick of a busy channel reaches thousands of sockets. Waking each socket's task to write it
//! costs more than the write itself (a task wake-up, a broadcast receive, re-arming its futures,
//! framing the same JSON again), so the sweep writes the tick's bytes, framed once per channel,
//! straight into each socket's kernel buffer ([`SocketOut::deliver`]). Only what the kernel does
//! not take at once is queued here, and the task is woken to write it ([`SocketOut::poll_drain`])
//! under the write timeout. The task's own frames (history, errors, pings, pongs, the close) go
//! through the same queue ([`SocketWriter`]), so the two writers never interleave bytes.
//!
//! A socket whose queue holds [`SocketOut::backlog`] events takes no more: further ticks are
//! counted as missed, and once the queue is written the client is told
//! `{"type":"lagged","missed":n}`.
//!
//! The sweep polls the writer with a no-op waker; it only does so while nothing is queued, i.e.
//! while the task is not waiting to write, so it never replaces a waker the task relies on.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::AsyncWrite;
use tokio::sync::Notify;

use super::event::ServerFrame;

/// The writing half of a socket's connection (plain TCP or TLS).
pub(crate) type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Bytes the socket's own frames may queue behind a client that does not read before its task
/// waits: a client that sends pings and reads nothing cannot grow the node's memory.
const TASK_QUEUE_BYTES: usize = 64 * 1024;

/// WebSocket opcode of a text frame.
const TEXT: u8 = 0x1;

/// One complete, unmasked server frame (RFC 6455 §5.2): what every socket of a channel is sent,
/// framed once.
pub(crate) fn text_frame(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    out.put_u8(0x80 | TEXT); // FIN: chat frames are never fragmented
    match payload.len() {
        n if n < 126 => out.put_u8(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.put_u8(126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(127);
            out.put_u64(n as u64);
        }
    }
    out.put_slice(payload);
    out.freeze()
}

/// One event of one channel, framed once for every socket of that channel on this node.
#[derive(Debug)]
pub(crate) enum ChannelFrame {
    /// A posted message; `seq` lets a socket skip what its history already held.
    Message { seq: u64, frame: Bytes },
    /// `deleted`, `ban`, `unban`, or `lagged` (the dispatcher itself fell behind the catalog).
    Notice(Bytes),
    /// `settings`: moderators see the blocked words, everyone else does not.
    Settings { public: Bytes, moderator: Bytes },
    /// The channel is gone: its sockets close.
    ChannelDeleted,
}

/// The events of one channel gathered for one tick, in catalog order, and their bytes on the
/// wire, concatenated once for all sockets.
#[derive(Debug)]
pub(crate) struct Tick {
    frames: Vec<ChannelFrame>,
    public: Bytes,
    moderator: Bytes,
    /// The lowest message `seq` in the tick (`u64::MAX` without messages).
    first_seq: u64,
    /// Chat messages in the tick.
    pub(crate) messages: u64,
    /// Frames in the tick.
    pub(crate) events: usize,
    /// The channel was deleted (its last event): its sockets close after these frames.
    pub(crate) closes: bool,
}

impl Tick {
    pub(crate) fn new(frames: Vec<ChannelFrame>) -> Tick {
        let mut public = BytesMut::new();
        let mut moderator = BytesMut::new();
        let mut first_seq = u64::MAX;
        let (mut messages, mut events, mut closes) = (0, 0, false);
        for frame in &frames {
            let (p, m) = match frame {
                ChannelFrame::Message { seq, frame } => {
                    first_seq = first_seq.min(*seq);
                    messages += 1;
                    (frame, frame)
                }
                ChannelFrame::Notice(frame) => (frame, frame),
                ChannelFrame::Settings { public, moderator } => (public, moderator),
                ChannelFrame::ChannelDeleted => {
                    closes = true;
                    break;
                }
            };
            events += 1;
            public.put_slice(p);
            moderator.put_slice(m);
        }
        Tick { frames, public: public.freeze(), moderator: moderator.freeze(), first_seq, messages, events, closes }
    }

    /// What a socket is sent of this tick, and how many chat messages that is: messages up to
    /// `skip_through` are left out (its history held them), settings as its caller may see them.
    fn bytes_for(&self, moderator: bool, skip_through: u64) -> (Bytes, u64) {
        if self.first_seq > skip_through {
            let bytes = if moderator { &self.moderator } else { &self.public };
            return (bytes.clone(), self.messages);
        }
        // Only the first ticks of a socket whose history overlapped them.
        let mut out = BytesMut::new();
        let mut messages = 0;
        for frame in &self.frames {
            match frame {
                ChannelFrame::Message { seq, .. } if *seq <= skip_through => {}
                ChannelFrame::Message { frame, .. } => {
                    out.put_slice(frame);
                    messages += 1;
                }
                ChannelFrame::Notice(frame) => out.put_slice(frame),
                ChannelFrame::Settings { public, moderator: m } => out.put_slice(if moderator { m } else { public }),
                ChannelFrame::ChannelDeleted => break,
            }
        }
        (out.freeze(), messages)
    }
}

/// Why a socket must close, set by the fan-out or by a failed write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The channel was deleted: close normally after its last frames.
    ChannelDeleted,
    /// The node is shutting down: close with 1001.
    ShuttingDown,
    /// Writing failed: the connection is gone.
    Broken,
}

/// How the sweep's delivery of one tick to one socket went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// The kernel took all of it: the socket's task was not woken.
    Direct,
    /// Some or all of it waits in the socket's queue for its task.
    Queued,
    /// Kept until the socket's history is written ([`SocketOut::release`]).
    Held,
    /// Not sent: the socket is closing, or its queue is full (counted as missed).
    Dropped,
}

/// The outgoing side of one chat socket (see the module docs).
pub(crate) struct SocketOut {
    state: Mutex<OutState>,
    /// Wakes the socket's task: bytes are queued, or the socket must close.
    wake: Notify,
    /// Moderators are sent `settings` with the blocked words.
    moderator: bool,
    /// Messages up to this `seq` reached the socket with its history.
    skip_through: AtomicU64,
    /// Events the queue holds at most before further ticks are missed.
    backlog: usize,
}

struct OutState {
    writer: Writer,
    /// Bytes the kernel has not taken yet, in order, with the events each carries.
    queue: VecDeque<(Bytes, usize)>,
    queued_bytes: usize,
    queued_events: usize,
    /// The writer holds bytes it has not passed on (TLS records): the task flushes them.
    unflushed: bool,
    /// Ticks kept while the history is written, `None` once released.
    held: Option<Vec<Arc<Tick>>>,
    /// Events not sent because the queue was full, told to the client once it catches up.
    missed: u64,
    end: Option<End>,
}

impl OutState {
    fn enqueue(&mut self, bytes: Bytes, events: usize) {
        self.queued_bytes += bytes.len();
        self.queued_events += events;
        self.queue.push_back((bytes, events));
    }
}

impl std::fmt::Debug for SocketOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketOut").field("moderator", &self.moderator).finish_non_exhaustive()
    }
}

impl SocketOut {
    /// A socket's output on `writer`, holding ticks until [`SocketOut::release`].
    pub(crate) fn new(writer: Writer, moderator: bool, backlog: usize) -> Arc<SocketOut> {
        Arc::new(SocketOut {
            state: Mutex::new(OutState {
                writer,
                queue: VecDeque::new(),
                queued_bytes: 0,
                queued_events: 0,
                unflushed: false,
                held: Some(Vec::new()),
                missed: 0,
                end: None,
            }),
            wake: Notify::new(),
            moderator,
            skip_through: AtomicU64::new(0),
            backlog: backlog.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, OutState> {
        // Every update leaves the state whole; a panicking holder cannot leave half a write queued.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Send `tick` to this socket (the fan-out's sweep): straight into the kernel when nothing is
    /// queued, else behind what is. Returns how, and the chat messages it carried.
    pub(crate) fn deliver(&self, tick: &Arc<Tick>) -> (Delivered, u64) {
        let mut state = self.lock();
        if state.end.is_some() {
            return (Delivered::Dropped, 0);
        }
        if let Some(held) = &mut state.held {
            held.push(tick.clone());
            return (Delivered::Held, 0);
        }
        self.push_tick(&mut state, tick)
    }

    /// Send `tick` now or behind what is queued (skipped when the queue is full); a tick that
    /// closes the channel ends the socket after its frames.
    fn push_tick(&self, state: &mut OutState, tick: &Tick) -> (Delivered, u64) {
        let (bytes, messages) = tick.bytes_for(self.moderator, self.skip_through.load(Ordering::Relaxed));
        let sent = if state.queued_events > 0 && state.queued_events + tick.events > self.backlog {
            state.missed += tick.events as u64;
            (Delivered::Dropped, 0)
        } else {
            (self.push(state, bytes, tick.events, &mut Context::from_waker(Waker::noop())), messages)
        };
        if tick.closes {
            state.end = Some(End::ChannelDeleted);
            self.wake.notify_one();
        }
        sent
    }

    /// Queue `bytes` behind what waits, or write them now when nothing does; what the kernel
    /// does not take is queued and the task woken.
    fn push(&self, state: &mut OutState, mut bytes: Bytes, events: usize, cx: &mut Context<'_>) -> Delivered {
        if bytes.is_empty() {
            return Delivered::Direct;
        }
        if state.queue.is_empty() && !state.unflushed {
            let written = match write_some(&mut state.writer, &mut bytes, cx) {
                Ok(true) => flushed(&mut state.writer, cx).map(|done| (true, done)),
                Ok(false) => Ok((false, true)),
                Err(e) => Err(e),
            };
            match written {
                Ok((true, true)) => return Delivered::Direct,
                Ok((_, done)) => state.unflushed = !done,
                Err(_) => {
                    state.end = Some(End::Broken);
                    self.wake.notify_one();
                    return Delivered::Dropped;
                }
            }
        }
        if !bytes.is_empty() {
            state.enqueue(bytes, events);
        }
        self.wake.notify_one();
        Delivered::Queued
    }

    /// The history is written: send the ticks held since the socket subscribed, leaving out the
    /// messages its history held (up to `skip_through`), and every tick from now on as it comes.
    pub(crate) fn release(&self, skip_through: u64) {
        self.skip_through.store(skip_through, Ordering::Relaxed);
        let mut state = self.lock();
        for tick in state.held.take().unwrap_or_default() {
            if state.end.is_some() {
                break;
            }
            self.push_tick(&mut state, &tick);
        }
    }

    /// The socket must close (the fan-out stopped); the task is woken to do it.
    pub(crate) fn end(&self, why: End) {
        self.lock().end.get_or_insert(why);
        self.wake.notify_one();
    }

    /// Why the socket must close, once it must.
    pub(crate) fn ended(&self) -> Option<End> {
        self.lock().end
    }

    /// Resolves when the task has something to do: bytes queued or the socket closing.
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Write what is queued (the socket's task), then tell the client of missed events if any.
    pub(crate) fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.lock();
        let state = &mut *state;
        loop {
            while let Some((front, events)) = state.queue.front_mut() {
                let (before, events) = (front.len(), *events);
                let written = write_some(&mut state.writer, front, cx);
                state.queued_bytes -= before - front.len();
                if front.is_empty() {
                    state.queued_events -= events;
                    state.queue.pop_front();
                }
                match written {
                    Ok(true) => {}
                    Ok(false) => return Poll::Pending, // the writer holds `cx` until it can take more
                    Err(e) => {
                        state.end = Some(End::Broken);
                        return Poll::Ready(Err(e));
                    }
                }
            }
            if state.missed == 0 {
                break;
            }
            let notice = ServerFrame::Lagged { missed: state.missed }.to_wire();
            state.missed = 0;
            state.enqueue(notice, 1);
        }
        match flushed(&mut state.writer, cx) {
            Ok(true) => {
                state.unflushed = false;
                Poll::Ready(Ok(()))
            }
            Ok(false) => {
                state.unflushed = true;
                Poll::Pending
            }
            Err(e) => {
                state.end = Some(End::Broken);
                Poll::Ready(Err(e))
            }
        }
    }
}

/// Write from `bytes` until they are all taken (`true`) or the writer would block (`false`),
/// advancing past what it took.
fn write_some(writer: &mut Writer, bytes: &mut Bytes, cx: &mut Context<'_>) -> io::Result<bool> {
    while !bytes.is_empty() {
        match Pin::new(&mut *writer).poll_write(cx, bytes) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => bytes.advance(n),
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => return Ok(false),
        }
    }
    Ok(true)
}

/// Whether the writer passed on everything it was given (always, for plain TCP).
fn flushed(writer: &mut Writer, cx: &mut Context<'_>) -> io::Result<bool> {
    match Pin::new(&mut *writer).poll_flush(cx) {
        Poll::Ready(Ok(())) => Ok(true),
        Poll::Ready(Err(e)) => Err(e),
        Poll::Pending => Ok(false),
    }
}

/// The socket's own writes, for its WebSocket protocol handler: through the same queue as the
/// sweep's, so that frames never interleave.
pub(crate) struct SocketWriter(pub(crate) Arc<SocketOut>);

impl AsyncWrite for SocketWriter {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let out = &self.0;
        if out.lock().queued_bytes > TASK_QUEUE_BYTES {
            // Make room first; `Pending` leaves `cx` with the writer.
            match out.poll_drain(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if out.lock().queued_bytes > TASK_QUEUE_BYTES => return Poll::Pending,
                _ => {}
            }
        }
        let mut state = out.lock();
        if state.end == Some(End::Broken) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        match out.push(&mut state, Bytes::copy_from_slice(buf), 0, cx) {
            Delivered::Dropped => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            _ => Poll::Ready(Ok(buf.len())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut *self.0.lock().writer).poll_shutdown(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    fn message(seq: u64, text: &str) -> ChannelFrame {
        ChannelFrame::Message { seq, frame: text_frame(text.as_bytes()) }
    }

    fn tick(frames: Vec<ChannelFrame>) -> Arc<Tick> {
        Arc::new(Tick::new(frames))
    }

    /// The payloads of the next `n` server frames on `reader` (unmasked, lengths under 64 KiB).
    async fn read_frames(reader: &mut DuplexStream, n: usize) -> Vec<String> {
        let mut frames = Vec::new();
        for _ in 0..n {
            let mut head = [0u8; 2];
            reader.read_exact(&mut head).await.unwrap();
            assert_eq!(head[0], 0x81, "a whole text frame");
            let len = match head[1] {
                126 => usize::from(reader.read_u16().await.unwrap()),
                len => usize::from(len),
            };
            let mut payload = vec![0; len];
            reader.read_exact(&mut payload).await.unwrap();
            frames.push(String::from_utf8(payload).unwrap());
        }
        frames
    }

    #[tokio::test]
    async fn a_tick_goes_straight_into_a_writer_with_room_as_the_caller_may_see_it() {
        let settings = || ChannelFrame::Settings { public: text_frame(b"public"), moderator: text_frame(b"moderator") };
        let tick = tick(vec![message(1, "one"), settings(), message(2, "two")]);
        for (moderator, seen) in [(false, "public"), (true, "moderator")] {
            let (writer, mut reader) = tokio::io::duplex(64 * 1024);
            let out = SocketOut::new(Box::new(writer), moderator, 8);
            out.release(0);
            assert_eq!(out.deliver(&tick), (Delivered::Direct, 2));
            assert_eq!(read_frames(&mut reader, 3).await, ["one", seen, "two"]);
        }
    }

    #[tokio::test]
    async fn a_full_writer_queues_then_skips_and_the_client_is_told_what_it_missed() {
        let (writer, mut reader) = tokio::io::duplex(16);
        let out = SocketOut::new(Box::new(writer), false, 3);
        out.release(0);
        let long = "x".repeat(40);
        assert_eq!(out.deliver(&tick(vec![message(1, &long), message(2, "b")])).0, Delivered::Queued);
        assert_eq!(out.deliver(&tick(vec![message(3, "c")])).0, Delivered::Queued);
        // The queue holds three events, its backlog: the next tick is skipped.
        assert_eq!(out.deliver(&tick(vec![message(4, "d"), message(5, "e")])), (Delivered::Dropped, 0));
        let (drained, frames) = tokio::join!(poll_fn(|cx| out.poll_drain(cx)), read_frames(&mut reader, 4));
        drained.unwrap();
        assert_eq!(frames, [long.as_str(), "b", "c", r#"{"type":"lagged","missed":2}"#]);
        // Caught up: the next tick goes straight in again.
        assert_eq!(out.deliver(&tick(vec![message(6, "f")])).0, Delivered::Direct);
        assert_eq!(read_frames(&mut reader, 1).await, ["f"]);
    }

    #[tokio::test]
    async fn ticks_wait_for_the_history_and_leave_out_what_it_held() {
        let (writer, mut reader) = tokio::io::duplex(64 * 1024);
        let out = SocketOut::new(Box::new(writer), false, 8);
        assert_eq!(out.deliver(&tick(vec![message(5, "five"), message(6, "six")])).0, Delivered::Held);
        SocketWriter(out.clone()).write_all(&text_frame(b"history")).await.unwrap();
        out.release(5); // the history's last message
        assert_eq!(out.deliver(&tick(vec![message(7, "seven")])).0, Delivered::Direct);
        assert_eq!(read_frames(&mut reader, 3).await, ["history", "six", "seven"]);
    }

    #[tokio::test]
    async fn a_deleted_channel_ends_the_socket_after_its_last_frames() {
        let (writer, mut reader) = tokio::io::duplex(64 * 1024);
        let out = SocketOut::new(Box::new(writer), false, 8);
        out.release(0);
        out.deliver(&tick(vec![message(1, "last"), ChannelFrame::ChannelDeleted]));
        assert_eq!(out.ended(), Some(End::ChannelDeleted));
        out.woken().await; // the task is told
        assert_eq!(read_frames(&mut reader, 1).await, ["last"]);
        assert_eq!(out.deliver(&tick(vec![message(2, "after")])), (Delivered::Dropped, 0));
    }
}
