// The history service's REST API (proto/openapi.yaml). CORS is on by default.
async function call(method, url) {
  const res = await fetch(url, { method });
  const body = await res.json().catch(() => null);
  if (!res.ok) {
    const msg = body && body.error ? `${body.error.code}: ${body.error.message}` : `HTTP ${res.status}`;
    throw new Error(msg);
  }
  return body;
}

const q = (params) => new URLSearchParams(params).toString();

export const fetchInbox = (history, user, limit = 20) =>
  call('GET', `${history}/notifications?${q({ user_id: user, limit })}`);

export const markRead = (history, user, id) =>
  call('POST', `${history}/notifications/${encodeURIComponent(id)}/read?${q({ user_id: user })}`);

export const markAllRead = (history, user, upTo) =>
  call('POST', `${history}/notifications/read-all?${q(upTo ? { user_id: user, up_to: upTo } : { user_id: user })}`);

export const fetchRoomMessages = (history, room, limit = 20) =>
  call('GET', `${history}/rooms/${encodeURIComponent(room)}/messages?${q({ limit })}`);
