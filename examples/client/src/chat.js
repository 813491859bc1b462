// Chat state for the one room this page is in: the log (messages and
// joined/left events, oldest first), who is present, and whether the
// gateway has confirmed our join. `since` holds the joined/left events seen
// after our presence request went out (user -> 'joined' | 'left'): the answer
// is a snapshot taken in Redis, and it can reach us after an event that
// happened later (the gateway gets replies and room events on two Redis
// connections), so the events win over the snapshot.
export const initialChat = { room: null, joined: false, log: [], presence: [], since: {}, error: null };

let seq = 0;
const event = (text) => ({ kind: 'event', key: `e${++seq}`, text });
const message = (m) => ({ kind: 'message', key: m.id, id: m.id, from: m.from, message: m.message, created_at: m.created_at });

export function chatReducer(state, action) {
  const f = action.frame;
  switch (action.type) {
    case 'want': // the user asked to join (or leave, room = null)
      return action.room === state.room ? state : { ...initialChat, room: action.room };
    case 'disconnected':
      return state.joined ? { ...state, joined: false, presence: [] } : state;
    case 'history': {
      if (action.room !== state.room) return state;
      const held = new Set(state.log.map((e) => e.key));
      const older = action.items.filter((m) => !held.has(m.id)).reverse().map(message);
      return older.length ? { ...state, log: [...older, ...state.log] } : state;
    }
    case 'frame':
      break;
    default:
      return state;
  }
  if (f.room !== state.room && f.type !== 'error') return state;
  switch (f.type) {
    case 'joined':
      // Our own join (ref): App asks for presence right then.
      if (f.ref != null) return { ...state, joined: true, since: {}, error: null };
      return {
        ...state,
        log: [...state.log, event(`${f.user_id} joined`)],
        presence: state.presence.includes(f.user_id) ? state.presence : [...state.presence, f.user_id].sort(),
        since: { ...state.since, [f.user_id]: 'joined' },
      };
    case 'left':
      if (f.ref != null) return { ...state, joined: false };
      return {
        ...state,
        log: [...state.log, event(`${f.user_id} left`)],
        presence: state.presence.filter((u) => u !== f.user_id),
        since: { ...state.since, [f.user_id]: 'left' },
      };
    case 'presence': {
      const users = new Set(f.users);
      for (const [u, what] of Object.entries(state.since)) {
        if (what === 'joined') users.add(u);
        else users.delete(u);
      }
      return { ...state, presence: [...users].sort() };
    }
    case 'message':
      if (state.log.some((e) => e.key === f.id)) return state;
      return { ...state, log: [...state.log, message(f)] };
    case 'error':
      return { ...state, error: `${f.code}: ${f.message}` };
    default:
      return state;
  }
}
