import { useState } from 'react';

export function Chat({ chat, connected, defaultRoom, onJoin, onLeave, onPublish }) {
  const [room, setRoom] = useState(defaultRoom);
  const [text, setText] = useState('');

  const join = (e) => {
    e.preventDefault();
    if (room.trim()) onJoin(room.trim());
  };
  const send = (e) => {
    e.preventDefault();
    if (text.trim() && onPublish(text)) setText('');
  };

  return (
    <section className="panel chat" data-testid="chat">
      <header>
        <h2>Chat {chat.room && <span className="muted">#{chat.room}</span>}</h2>
        <span data-testid="chat-state" data-joined={chat.joined ? 'true' : 'false'} className="muted">
          {chat.joined ? 'joined' : chat.room ? 'joining…' : 'not in a room'}
        </span>
      </header>
      <form onSubmit={join} className="row">
        <input data-testid="room-input" value={room} onChange={(e) => setRoom(e.target.value)} placeholder="room" />
        <button data-testid="join-button" type="submit" disabled={!connected}>Join</button>
        <button data-testid="leave-button" type="button" disabled={!chat.room} onClick={onLeave}>Leave</button>
      </form>
      <div className="presence" data-testid="presence-list">
        Here:{' '}
        {chat.presence.map((u) => (
          <span key={u} className="user" data-testid="presence-user">{u}</span>
        ))}
      </div>
      <ol className="log" data-testid="chat-log">
        {chat.log.map((e) =>
          e.kind === 'message' ? (
            <li key={e.key} data-testid="chat-message" data-from={e.from}>
              <b>{e.from}</b> <span data-testid="chat-text">{e.message}</span>
            </li>
          ) : (
            <li key={e.key} className="event" data-testid="chat-event">{e.text}</li>
          ),
        )}
      </ol>
      {chat.error && <p className="error" data-testid="chat-error">{chat.error}</p>}
      <form onSubmit={send} className="row">
        <input data-testid="message-input" value={text} onChange={(e) => setText(e.target.value)}
               placeholder={chat.joined ? 'say something' : 'join a room first'} maxLength={4096} />
        <button data-testid="send-button" type="submit" disabled={!chat.joined}>Send</button>
      </form>
    </section>
  );
}
