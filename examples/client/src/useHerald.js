import { useEffect, useRef, useState } from 'react';

// One WebSocket to a Herald gateway for `user`, reconnecting with
// exponential backoff (0.5 s doubling to 10 s, with jitter) whenever it
// closes: a draining gateway closes with 1001 and the next attempt lands on
// a live one. Frames go to onFrame; `send` queues nothing (a frame sent while
// disconnected is dropped and reported as false).
export function useHerald(gatewayUrl, user, onFrame) {
  const [status, setStatus] = useState('idle'); // idle | connecting | open | closed
  const [attempt, setAttempt] = useState(0);
  const wsRef = useRef(null);
  const onFrameRef = useRef(onFrame);
  onFrameRef.current = onFrame;

  useEffect(() => {
    if (!user) return undefined;
    let stopped = false;
    let timer = null;
    let tries = 0;

    const connect = () => {
      const url = new URL(gatewayUrl);
      url.searchParams.set('user_id', user);
      setStatus('connecting');
      const ws = new WebSocket(url);
      wsRef.current = ws;
      ws.onopen = () => {
        tries = 0;
        setStatus('open');
      };
      ws.onmessage = (ev) => {
        let frame;
        try {
          frame = JSON.parse(ev.data);
        } catch {
          return;
        }
        onFrameRef.current(frame);
      };
      ws.onclose = (ev) => {
        if (wsRef.current === ws) wsRef.current = null;
        if (stopped) return;
        setStatus('closed');
        if (ev.code === 1008) return; // refused (bad user): retrying will not help
        const delay = Math.min(10000, 500 * 2 ** tries) * (0.8 + Math.random() * 0.4);
        tries += 1;
        setAttempt(tries);
        timer = setTimeout(connect, delay);
      };
    };
    connect();

    return () => {
      stopped = true;
      clearTimeout(timer);
      if (wsRef.current) wsRef.current.close(1000);
      wsRef.current = null;
      setStatus('idle');
    };
  }, [gatewayUrl, user]);

  const send = (frame) => {
    const ws = wsRef.current;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  };

  return { status, attempt, send };
}
