// Where the demo connects, from the page's query string, with defaults that
// match `make up`:
//   ?gateway=ws://127.0.0.1:8081&history=http://127.0.0.1:8082&user=alice&room=lobby
const DEFAULTS = {
  gateway: 'ws://127.0.0.1:8081',
  history: 'http://127.0.0.1:8082',
  user: '',
  room: 'lobby',
};

export function readConfig(search = window.location.search) {
  const q = new URLSearchParams(search);
  const pick = (k) => (q.get(k) || '').trim() || DEFAULTS[k];
  return {
    gateway: wsUrl(pick('gateway')),
    history: pick('history').replace(/\/+$/, ''),
    user: pick('user'),
    room: pick('room'),
  };
}

// Accepts ws://host:port, ws://host:port/ws or a bare host:port.
function wsUrl(s) {
  const u = new URL(/^wss?:\/\//.test(s) ? s : `ws://${s}`);
  if (u.pathname === '/' || u.pathname === '') u.pathname = '/ws';
  return u.toString();
}
