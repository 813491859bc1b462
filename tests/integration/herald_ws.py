"""A small blocking WebSocket client (RFC 6455) on the standard library only,
so the integration tests need nothing from PyPI."""
import base64
import json
import os
import socket
import struct
import time
import urllib.parse

import herald_contract_log


class WsClosed(Exception):
    def __init__(self, code, reason):
        super().__init__(f"closed {code} {reason!r}")
        self.code = code
        self.reason = reason


class WsRefused(ConnectionError):
    """The server answered the upgrade with an HTTP status instead of 101."""
    def __init__(self, status, headers, body):
        super().__init__(f"handshake refused: {status} {body[:300]!r}")
        self.status = status
        self.headers = headers  # lowercase name -> value
        self.body = body

    def json(self):
        return json.loads(self.body)


def token_path(token, path="/ws"):
    """The upgrade path carrying a token as ?token= (proto/ws.md)."""
    return f"{path}?token={urllib.parse.quote(token, safe='')}"


class WsClient:
    def __init__(self, host, port, path, timeout=5.0, source=None, auto_pong=True, token=None,
                 subprotocols=None, headers=None):
        """auto_pong=False: server PINGs are counted (pings_received), not
        answered, as a silent client would. token: sent as ?token= (appended
        to path); subprotocols: a list offered in Sec-WebSocket-Protocol (a
        browser's way: ["herald", "herald.token." + jwt]); headers: extra
        request headers (e.g. Origin). A refused upgrade raises WsRefused."""
        self.auto_pong = auto_pong
        self.pings_received = 0
        if token is not None:
            path += ("&" if "?" in path else "?") + "token=" + urllib.parse.quote(token, safe="")
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        if subprotocols:
            extra += f"Sec-WebSocket-Protocol: {', '.join(subprotocols)}\r\n"
        req = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n{extra}\r\n")
        self.sock.sendall(req.encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("connection closed during handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0]
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        if " 101 " not in status + " ":
            code = int(status.split()[1]) if len(status.split()) > 1 else 0
            body = self.buf
            n = int(self.headers.get("content-length", "0") or 0)
            deadline = time.monotonic() + timeout
            while len(body) < n and time.monotonic() < deadline:
                try:
                    chunk = self.sock.recv(4096)
                except OSError:
                    break
                if not chunk:
                    break
                body += chunk
            self.sock.close()
            raise WsRefused(code, self.headers, body.decode(errors="replace"))
        self.subprotocol = self.headers.get("sec-websocket-protocol")
        self.closed = None
        # Frames are recorded for tests/contract/validate-ws-traffic.mjs ($HERALD_CONTRACT_WS_LOG).
        self._contract = herald_contract_log.ws_connection(port, path)

    def _record(self, direction, opcode, payload, fin=True, masked=False):
        if "_contract" not in self.__dict__:  # a client built around an upgraded socket (WsClient.__new__)
            try:
                port = self.sock.getpeername()[1]
            except OSError:
                port = None
            self._contract = herald_contract_log.ws_connection(port, None)
        herald_contract_log.ws_frame(self._contract, direction, opcode, payload, fin, masked)

    def _read_exact(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame in time")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send_frame(self, opcode, payload, fin=True):
        head = bytes([(0x80 if fin else 0) | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)
        if opcode not in (0x9, 0xA):
            self._record("client", opcode, payload, fin)

    def send_text(self, text):
        self.send_frame(0x1, text.encode())

    def send_json(self, obj):
        self.send_text(json.dumps(obj))

    def recv_frame(self, timeout=5.0):
        """Returns (opcode, payload) of the next data frame; answers pings;
        raises WsClosed on a close frame."""
        deadline = time.monotonic() + timeout
        while True:
            b0, b1 = self._read_exact(2, deadline)
            opcode, n, fin = b0 & 0x0F, b1 & 0x7F, bool(b0 & 0x80)
            if n == 126:
                n = struct.unpack("!H", self._read_exact(2, deadline))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read_exact(8, deadline))[0]
            if b1 & 0x80:
                mask = self._read_exact(4, deadline)
            payload = self._read_exact(n, deadline)
            if opcode not in (0x9, 0xA):
                self._record("server", opcode, payload, fin, bool(b1 & 0x80))
            if opcode == 0x9:
                self.pings_received += 1
                if self.auto_pong:
                    self.send_frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.closed = (code, payload[2:].decode(errors="replace"))
                raise WsClosed(*self.closed)
            return opcode, payload

    def recv_json(self, timeout=5.0):
        op, payload = self.recv_frame(timeout)
        return json.loads(payload)

    def recv_type(self, type_, timeout=5.0):
        """Skips frames until one of the given type arrives."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv_json(max(0.01, deadline - time.monotonic()))
            if msg.get("type") == type_:
                return msg

    def expect_nothing(self, seconds):
        """Asserts no data frame arrives for this long."""
        try:
            op, payload = self.recv_frame(seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame: {payload[:200]!r}")

    def expect_close(self, code, timeout=5.0):
        """Reads (and drops) frames until the server's close frame; fails
        unless it carries code, or if the connection ends without one.
        Returns the reason."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.recv_frame(max(0.01, deadline - time.monotonic()))
            except WsClosed as e:
                if e.code != code:
                    raise AssertionError(f"closed with {e.code} {e.reason!r}, wanted {code}") from None
                return e.reason
            except TimeoutError:
                raise AssertionError(f"no close frame {code} within {timeout}s") from None
            except (ConnectionError, OSError) as e:
                raise AssertionError(f"connection dropped without close frame {code}: {e!r}") from None

    def expect_eof(self, timeout=5.0):
        """After a close frame: fails unless the server hangs up (EOF) in time."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"server kept the connection open {timeout}s after its close")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                return
            if not chunk:
                return

    def close_handshake(self, code=1000, timeout=5.0):
        """Sends a close frame and waits for the server's answer (its close
        frame or EOF): afterwards the server has seen the close."""
        self.send_frame(0x8, struct.pack("!H", code))
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.recv_frame(max(0.01, deadline - time.monotonic()))
        except WsClosed:
            pass
        except TimeoutError:
            raise AssertionError(f"no answer to close within {timeout}s") from None
        except (ConnectionError, OSError):
            pass
        self.sock.close()

    def close(self, code=1000):
        try:
            self.send_frame(0x8, struct.pack("!H", code))
        except OSError:
            pass
        self.sock.close()


def user_path(user, rooms=("*",), path="/ws", **claims):
    """The upgrade path for user with a real token (every room by default);
    claims go to mint_token (ttl, iat, ...)."""
    from herald_stack import mint_token
    return token_path(mint_token(user, rooms=None if rooms is None else list(rooms), **claims), path)
