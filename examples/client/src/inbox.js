// Inbox state: the notifications this page holds (newest first) and the
// unread badge. The badge starts from history's unread_count and moves with
// the live frames; read/unread/read_all are applied idempotently to the ids
// held (proto/ws.md), so an echo of this tab's own click changes nothing.
export const initialInbox = { items: [], unread: 0, loaded: false, error: null };

const byIdDesc = (a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
const toItem = (n) => ({
  id: n.id,
  type: n.type,
  message: n.message,
  created_at: n.created_at,
  read: Boolean(n.read_at),
});

function setRead(state, pred, read) {
  let delta = 0;
  const items = state.items.map((it) => {
    if (it.read === read || !pred(it)) return it;
    delta += read ? -1 : 1;
    return { ...it, read };
  });
  return delta ? { ...state, items, unread: Math.max(0, state.unread + delta) } : state;
}

export function inboxReducer(state, action) {
  switch (action.type) {
    case 'reset':
      return initialInbox;
    case 'loaded': {
      // Live notifications the worker had not stored yet when the page was
      // read stay, and count, on top of history's answer.
      const fetched = action.page.items.map(toItem);
      const ids = new Set(fetched.map((it) => it.id));
      const extra = state.items.filter((it) => !ids.has(it.id) && (!fetched[0] || it.id > fetched[0].id));
      return {
        items: [...extra, ...fetched].sort(byIdDesc),
        unread: action.page.unread_count + extra.filter((it) => !it.read).length,
        loaded: true,
        error: null,
      };
    }
    case 'error':
      return { ...state, error: action.error };
    case 'notification': {
      if (state.items.some((it) => it.id === action.notification.id)) return state;
      const item = toItem(action.notification);
      return { ...state, items: [item, ...state.items].sort(byIdDesc), unread: state.unread + (item.read ? 0 : 1) };
    }
    case 'read':
      return setRead(state, (it) => action.ids.includes(it.id), true);
    case 'unread':
      return setRead(state, (it) => action.ids.includes(it.id), false);
    case 'read_all':
      return action.up_to == null
        ? { ...setRead(state, () => true, true), unread: 0 }
        : setRead(state, (it) => it.id <= action.up_to, true);
    default:
      return state;
  }
}
