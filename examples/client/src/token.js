import { mintToken } from './api.js';

// One user's tokens, from POST /dev/token (see api.js). get() hands out the
// current token while more than a fifth of its life is left, else mints a
// new one; renew() always mints (the socket's refresh, and after a refused
// connect). Concurrent callers share one request.
export function tokenSource(history, user, rooms, ttl) {
  let cur = null; // {token, expires_at} (seconds since the epoch)
  let pending = null;
  const margin = () => (ttl * 1000) / 5;
  const renew = () => {
    if (!pending) {
      pending = mintToken(history, user, rooms, ttl).then(
        (t) => {
          cur = t;
          pending = null;
          return t;
        },
        (e) => {
          pending = null;
          throw e;
        },
      );
    }
    return pending;
  };
  return {
    get: () => (cur && cur.expires_at * 1000 - Date.now() > margin() ? Promise.resolve(cur) : renew()),
    renew,
    // When a socket whose token expires at exp (seconds) should send its refresh.
    refreshDelay: (exp) => Math.max(1000, exp * 1000 - Date.now() - margin()),
  };
}
