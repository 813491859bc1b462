const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : '');

export function Inbox({ inbox, onRead, onReadAll }) {
  return (
    <section className="panel inbox" data-testid="inbox">
      <header>
        <h2>
          Inbox{' '}
          <span className={inbox.unread ? 'badge' : 'badge zero'} data-testid="unread-badge" title="unread">
            {inbox.unread}
          </span>
        </h2>
        <button data-testid="mark-all-read" disabled={!inbox.unread} onClick={onReadAll}>
          Mark all read
        </button>
      </header>
      {inbox.error && <p className="error" data-testid="inbox-error">{inbox.error}</p>}
      {inbox.loaded && inbox.items.length === 0 && <p className="muted">No notifications yet.</p>}
      <ul data-testid="inbox-list">
        {inbox.items.map((n) => (
          <li
            key={n.id}
            className={n.read ? 'item read' : 'item unread'}
            data-testid="notification-item"
            data-id={n.id}
            data-read={n.read ? 'true' : 'false'}
            onClick={() => !n.read && onRead(n.id)}
            title={n.read ? 'read' : 'click to mark read'}
          >
            <span className="kind">{n.type}</span>
            <span className="text" data-testid="notification-message">{n.message}</span>
            <time>{time(n.created_at)}</time>
          </li>
        ))}
      </ul>
    </section>
  );
}
