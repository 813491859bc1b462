import { useCallback, useEffect, useMemo, useReducer, useRef, useState } from 'react';
import { readConfig } from './config.js';
import { tokenSource } from './token.js';
import { useHerald } from './useHerald.js';
import { fetchInbox, fetchRoomMessages, markAllRead, markRead } from './api.js';
import { inboxReducer, initialInbox } from './inbox.js';
import { chatReducer, initialChat } from './chat.js';
import { Inbox } from './Inbox.jsx';
import { Chat } from './Chat.jsx';

const cfg = readConfig();

export function App() {
  const [draft, setDraft] = useState(cfg.user);
  const [user, setUser] = useState(cfg.user);
  const [inbox, inboxDispatch] = useReducer(inboxReducer, initialInbox);
  const [chat, chatDispatch] = useReducer(chatReducer, initialChat);
  const chatRef = useRef(chat);
  chatRef.current = chat;
  const welcomes = useRef(0);
  const refSeq = useRef(0);
  const nextRef = (kind) => `${kind}${++refSeq.current}`;
  // The user's tokens (POST /dev/token): every room, cfg.ttl seconds each.
  const tokens = useMemo(() => (user ? tokenSource(cfg.history, user, ['*'], cfg.ttl) : null), [user]);
  // A history call with a current token.
  const withToken = useCallback((fn) => tokens.get().then((t) => fn(t.token)), [tokens]);

  const loadInbox = useCallback(() => {
    if (!tokens) return;
    withToken((tok) => fetchInbox(cfg.history, tok)).then(
      (page) => inboxDispatch({ type: 'loaded', page }),
      (err) => inboxDispatch({ type: 'error', error: `history: ${err.message}` }),
    );
  }, [tokens, withToken]);

  const onFrame = (f) => {
    switch (f.type) {
      case 'welcome':
        // After a reconnect, frames were missed: refetch the inbox and rejoin.
        if (welcomes.current++ > 0) loadInbox();
        if (chatRef.current.room) join(chatRef.current.room);
        break;
      case 'notification':
        inboxDispatch({ type: 'notification', notification: f.notification });
        break;
      case 'read':
      case 'unread':
        inboxDispatch({ type: f.type, ids: f.ids });
        break;
      case 'read_all':
        inboxDispatch({ type: 'read_all', up_to: f.up_to });
        loadInbox(); // older pages we do not hold changed too: take the count again
        break;
      case 'joined':
        if (f.ref != null && f.room === chatRef.current.room) send({ type: 'presence', room: f.room });
        chatDispatch({ type: 'frame', frame: f });
        break;
      case 'left':
      case 'presence':
      case 'message':
      case 'error':
        chatDispatch({ type: 'frame', frame: f });
        break;
      default:
        break;
    }
  };

  const { status, attempt, send, refreshes, authError } = useHerald(cfg.gateway, tokens, onFrame);
  const connected = status === 'open';

  useEffect(() => {
    welcomes.current = 0;
    inboxDispatch({ type: 'reset' });
    chatDispatch({ type: 'want', room: null });
    loadInbox();
  }, [tokens, loadInbox]);

  useEffect(() => {
    if (status === 'closed') chatDispatch({ type: 'disconnected' });
  }, [status]);

  function join(room) {
    send({ type: 'join', room, ref: nextRef('j') });
    withToken((tok) => fetchRoomMessages(cfg.history, tok, room)).then(
      (page) => chatDispatch({ type: 'history', room, items: page.items }),
      () => {}, // history is optional for the live chat
    );
  }

  const onJoin = (room) => {
    const cur = chatRef.current.room;
    if (cur === room && chatRef.current.joined) return;
    if (cur && cur !== room) send({ type: 'leave', room: cur, ref: nextRef('l') });
    chatDispatch({ type: 'want', room });
    join(room);
  };
  const onLeave = () => {
    if (chat.room) send({ type: 'leave', room: chat.room, ref: nextRef('l') });
    chatDispatch({ type: 'want', room: null });
  };
  const onPublish = (message) => send({ type: 'publish', room: chat.room, message, ref: nextRef('p') });

  const onRead = (id) => {
    inboxDispatch({ type: 'read', ids: [id] }); // the live `read` echo is then a no-op
    withToken((tok) => markRead(cfg.history, tok, id)).catch((err) => {
      inboxDispatch({ type: 'unread', ids: [id] }); // not stored yet (404) or history down: undo
      inboxDispatch({ type: 'error', error: `mark read: ${err.message}` });
    });
  };
  const onReadAll = () => {
    const upTo = inbox.items.length ? inbox.items[0].id : null;
    if (upTo) inboxDispatch({ type: 'read_all', up_to: upTo });
    withToken((tok) => markAllRead(cfg.history, tok, upTo)).catch((err) => {
      inboxDispatch({ type: 'error', error: `mark all read: ${err.message}` });
      loadInbox();
    });
  };

  const login = (e) => {
    e.preventDefault();
    setUser(draft.trim());
  };

  return (
    <div className="app">
      <header className="top">
        <h1>Herald</h1>
        <form onSubmit={login} className="row">
          <input data-testid="user-input" value={draft} onChange={(e) => setDraft(e.target.value)}
                 placeholder="user id" maxLength={128} />
          <button data-testid="connect-button" type="submit" disabled={!draft.trim() || draft.trim() === user}>
            {user ? 'Switch user' : 'Connect'}
          </button>
        </form>
        <span className={`status ${status}`} data-testid="connection-status" data-state={status}>
          {user ? <b data-testid="current-user">{user}</b> : 'not signed in'}
          {' · '}
          {status === 'closed' ? `reconnecting (attempt ${attempt})` : status}
        </span>
        <span className="muted endpoint" data-testid="token-state" data-refreshes={refreshes}>
          {cfg.gateway}
          {refreshes > 0 && ` · token refreshed ${refreshes}×`}
        </span>
      </header>
      {authError && <p className="error" data-testid="auth-error">{authError}</p>}
      {user ? (
        <main>
          <Inbox inbox={inbox} onRead={onRead} onReadAll={onReadAll} />
          <Chat chat={chat} connected={connected} defaultRoom={cfg.room}
                onJoin={onJoin} onLeave={onLeave} onPublish={onPublish} />
        </main>
      ) : (
        <p className="muted hint">Enter a user id to connect to {cfg.gateway}.</p>
      )}
    </div>
  );
}
