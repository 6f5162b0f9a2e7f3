// Chat over the channel's WebSocket (`/api/channels/{id}/chat/ws`). Frames: `history`, `message`,
// `deleted` (a moderator removed it: hide it everywhere), `ban`, `unban`, `settings`, `lagged`
// (refetch), `held` (to its author only: automod keeps the message for a moderator), `error`. The session cookie authenticates the upgrade; anonymous sockets only read.
import { api, chatSocketUrl } from './api.js';
import { h, toast } from './dom.js';

export class ChatConnection {
  /**
   * `handlers`: onHistory(messages), onMessage(m), onDeleted(id), onHeld({reason, message}),
   * onError(err), onStatus(text).
   */
  constructor(channelId, handlers, history = 50) {
    this.channelId = channelId;
    this.handlers = handlers;
    this.history = history;
    this.socket = null;
    this.closed = false;
    this.retryMs = 1000;
    this.connect();
  }

  connect() {
    if (this.closed) return;
    const socket = new WebSocket(chatSocketUrl(this.channelId, this.history));
    this.socket = socket;
    socket.addEventListener('open', () => { this.retryMs = 1000; this.status('Connected to chat'); });
    socket.addEventListener('message', (event) => this.onFrame(event.data));
    socket.addEventListener('close', () => {
      if (this.closed || this.socket !== socket) return;
      this.status('Chat disconnected; reconnecting…');
      setTimeout(() => this.connect(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 15000);
    });
  }

  status(text) { if (this.handlers.onStatus) this.handlers.onStatus(text); }

  onFrame(data) {
    let frame;
    try { frame = JSON.parse(data); } catch { return; }
    const on = this.handlers;
    switch (frame.type) {
      case 'history': on.onHistory && on.onHistory(frame.messages); break;
      case 'message': on.onMessage && on.onMessage(frame.message); break;
      case 'deleted': on.onDeleted && on.onDeleted(frame.messageId); break;
      case 'held': on.onHeld && on.onHeld(frame); break;
      case 'lagged': this.resync(); break;
      case 'error': on.onError && on.onError(frame.error); break;
      default: break;
    }
  }

  /** After `lagged`: the latest page replaces what is shown (deleted messages drop out). */
  async resync() {
    try {
      const page = await api('GET', `/api/channels/${encodeURIComponent(this.channelId)}/chat?limit=${this.history || 25}`);
      this.handlers.onHistory && this.handlers.onHistory(page.messages);
    } catch (e) { this.status(`Chat resync failed: ${e.message}`); }
  }

  /** Send over the socket (authenticated sockets only). */
  send(text) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) throw new Error('chat is not connected');
    this.socket.send(JSON.stringify({ type: 'message', text }));
  }

  close() {
    this.closed = true;
    if (this.socket) this.socket.close();
  }
}

/** Delete a message as a moderator; the socket's `deleted` frame removes it everywhere. */
export async function deleteMessage(channelId, messageId) {
  await api('DELETE', `/api/channels/${encodeURIComponent(channelId)}/chat/${encodeURIComponent(messageId)}`);
  toast('Message deleted');
}

/** Report a message to the channel's moderators (asks for the reason). */
export async function reportMessage(message) {
  const reason = window.prompt('Why are you reporting this message? (harassment, spam, ...)');
  if (!reason || !reason.trim()) return;
  await api('POST', '/api/reports', { targetType: 'message', targetId: message.id, reason: reason.trim().slice(0, 200) });
  toast('Reported to the moderators');
}

/** One chat line; `moderate` adds a Delete button, `reportable` a Report one. */
export function messageItem(message, moderate, extra = null, reportable = false) {
  return h('li', { 'data-message-id': message.id },
    extra,
    h('span', { class: 'author' }, message.userDisplayName || message.userId),
    h('span', { class: 'text' }, message.text),
    moderate
      ? h('button', { type: 'button', class: 'small secondary', 'data-action': 'delete-message',
        'aria-label': `Delete message from ${message.userDisplayName || message.userId}: ${message.text.slice(0, 40)}`,
        onclick: (e) => { e.currentTarget.disabled = true; deleteMessage(message.channelId, message.id).catch((err) => { e.target.disabled = false; toast(err.message, true); }); } },
      'Delete')
      : null,
    reportable
      ? h('button', { type: 'button', class: 'small secondary', 'data-action': 'report-message',
        'aria-label': `Report message from ${message.userDisplayName || message.userId}`,
        onclick: () => reportMessage(message).catch((err) => toast(err.message, true)) }, 'Report')
      : null);
}
