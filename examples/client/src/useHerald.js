import { useEffect, useRef, useState } from 'react';

const CLOSE_TOKEN_EXPIRED = 4001; // proto/ws.md: the token ran out before a refresh
const CLOSE_REVOKED = 4003; // the user's tokens were revoked or the user disconnected

// One WebSocket to a Herald gateway with the user's token, reconnecting with
// exponential backoff (0.5 s doubling to 10 s, with jitter) whenever it
// closes: a draining gateway closes with 1001 and the next attempt lands on
// a live one. The token travels as a subprotocol (browsers cannot set
// headers on a WebSocket): ["herald", "herald.token.<jwt>"], answered
// "herald" (proto/auth.md). Before the token expires the socket sends
// {"type":"refresh","token":…} with a new one and keeps going on the
// `refreshed` answer. Frames go to onFrame; `send` queues nothing (a frame
// sent while disconnected is dropped and reported as false).
export function useHerald(gatewayUrl, tokens, onFrame) {
  const [status, setStatus] = useState('idle'); // idle | connecting | open | closed
  const [attempt, setAttempt] = useState(0);
  const [refreshes, setRefreshes] = useState(0); // `refreshed` answers on this page
  const [authError, setAuthError] = useState(null);
  const wsRef = useRef(null);
  const onFrameRef = useRef(onFrame);
  onFrameRef.current = onFrame;

  useEffect(() => {
    if (!tokens) return undefined;
    let stopped = false;
    let timer = null;
    let refreshTimer = null;
    let tries = 0;
    let renewNext = false;
    let refSeq = 0;

    const sendOn = (ws, frame) => {
      if (ws.readyState !== WebSocket.OPEN) return false;
      ws.send(JSON.stringify(frame));
      return true;
    };

    const armRefresh = (ws, exp) => {
      clearTimeout(refreshTimer);
      refreshTimer = setTimeout(async () => {
        try {
          const t = await tokens.renew();
          if (!stopped && wsRef.current === ws) sendOn(ws, { type: 'refresh', token: t.token, ref: `r${++refSeq}` });
        } catch (e) {
          setAuthError(`token: ${e.message}`);
          if (!stopped && wsRef.current === ws) armRefresh(ws, Date.now() / 1000 + 5); // try again soon
        }
      }, tokens.refreshDelay(exp));
    };

    const retry = () => {
      setStatus('closed');
      const delay = Math.min(10000, 500 * 2 ** tries) * (0.8 + Math.random() * 0.4);
      tries += 1;
      setAttempt(tries);
      timer = setTimeout(connect, delay);
    };

    const connect = async () => {
      setStatus('connecting');
      let t;
      try {
        t = await (renewNext ? tokens.renew() : tokens.get());
        setAuthError(null);
      } catch (e) {
        if (stopped) return;
        setAuthError(`token: ${e.message}`);
        retry();
        return;
      }
      if (stopped) return;
      renewNext = false;
      let opened = false;
      const ws = new WebSocket(gatewayUrl, ['herald', `herald.token.${t.token}`]);
      wsRef.current = ws;
      ws.onopen = () => {
        opened = true;
        tries = 0;
        setStatus('open');
        armRefresh(ws, t.expires_at);
      };
      ws.onmessage = (ev) => {
        let frame;
        try {
          frame = JSON.parse(ev.data);
        } catch {
          return;
        }
        if (frame.type === 'refreshed') {
          setRefreshes((n) => n + 1);
          armRefresh(ws, frame.exp);
        }
        onFrameRef.current(frame);
      };
      ws.onclose = (ev) => {
        clearTimeout(refreshTimer);
        if (wsRef.current === ws) wsRef.current = null;
        if (stopped) return;
        // A refused upgrade (401: expired, revoked...) never opens: mint anew before retrying.
        if (!opened || ev.code === CLOSE_TOKEN_EXPIRED || ev.code === CLOSE_REVOKED) renewNext = true;
        retry();
      };
    };
    connect();

    return () => {
      stopped = true;
      clearTimeout(timer);
      clearTimeout(refreshTimer);
      if (wsRef.current) wsRef.current.close(1000);
      wsRef.current = null;
      setStatus('idle');
      setRefreshes(0);
    };
  }, [gatewayUrl, tokens]);

  const send = (frame) => {
    const ws = wsRef.current;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  };

  return { status, attempt, send, refreshes, authError };
}
