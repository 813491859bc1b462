// The history service's REST API (proto/openapi.yaml). CORS is on by default.
// Every user route takes `Authorization: Bearer <token>`; the user is the
// token's `sub` (proto/auth.md), so no call names the user itself.
async function call(method, url, token, body) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = await res.json().catch(() => null);
  if (!res.ok) {
    const e = json && json.error;
    const msg = e ? `${e.code}${e.reason ? ` (${e.reason})` : ''}: ${e.message}` : `HTTP ${res.status}`;
    const err = new Error(msg);
    err.status = res.status;
    throw err;
  }
  return json;
}

const q = (params) => new URLSearchParams(params).toString();

// Development login: history mints a token for any user when it runs with
// history.dev_mint = true (deploy/dev.conf, as `make up` does). A real app
// gets its tokens from its own identity provider instead.
export const mintToken = (history, user, rooms, ttl) =>
  call('POST', `${history}/dev/token`, null, { user_id: user, rooms, ttl_s: ttl });

export const fetchInbox = (history, token, limit = 20) =>
  call('GET', `${history}/notifications?${q({ limit })}`, token);

export const markRead = (history, token, id) =>
  call('POST', `${history}/notifications/${encodeURIComponent(id)}/read`, token);

export const markAllRead = (history, token, upTo) =>
  call('POST', `${history}/notifications/read-all${upTo ? `?${q({ up_to: upTo })}` : ''}`, token);

export const fetchRoomMessages = (history, token, room, limit = 20) =>
  call('GET', `${history}/rooms/${encodeURIComponent(room)}/messages?${q({ limit })}`, token);
