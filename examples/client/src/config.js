// Where the demo connects, from the page's query string, with defaults that
// match `make up`:
//   ?gateway=ws://127.0.0.1:8081&history=http://127.0.0.1:8082&user=alice&room=lobby&ttl=3600
const DEFAULTS = {
  gateway: 'ws://127.0.0.1:8081',
  history: 'http://127.0.0.1:8082',
  user: '',
  room: 'lobby',
  ttl: '3600',
};

export function readConfig(search = window.location.search) {
  const q = new URLSearchParams(search);
  const pick = (k) => (q.get(k) || '').trim() || DEFAULTS[k];
  const ttl = Number.parseInt(pick('ttl'), 10);
  return {
    gateway: wsUrl(pick('gateway')),
    history: pick('history').replace(/\/+$/, ''),
    user: pick('user'),
    room: pick('room'),
    // Lifetime of the tokens the page mints, seconds (1-86400); the socket refreshes before it ends.
    ttl: Number.isFinite(ttl) && ttl >= 1 && ttl <= 86400 ? ttl : Number(DEFAULTS.ttl),
  };
}

// Accepts ws://host:port, ws://host:port/ws or a bare host:port.
function wsUrl(s) {
  const u = new URL(/^wss?:\/\//.test(s) ? s : `ws://${s}`);
  if (u.pathname === '/' || u.pathname === '') u.pathname = '/ws';
  return u.toString();
}
