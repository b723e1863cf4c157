"""Misbehaving loopback servers for fault tests: silent, hanging after the headers, dropping
the connection, answering errors or junk, and a proxy that lets a real server answer the first
N requests and then fails in one of those ways."""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["FailingProxy", "http_server", "tcp_server"]


@contextmanager
def tcp_server(
    mode: str, reply: bytes = b"", *, accepted: threading.Event | None = None
) -> Iterator[str]:
    """A TCP server on 127.0.0.1 that, per connection: `silent` accepts and says nothing,
    `close` closes at once, `reply` sends `reply` then hangs, `reply_close` sends it and
    closes; `accepted` is set once it has accepted a connection. Yields "127.0.0.1:PORT"."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        lsock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
            except OSError:
                continue
            held.append(conn)
            if accepted is not None:
                accepted.set()
            if mode in ("reply", "reply_close"):
                try:
                    conn.recv(65536)
                    conn.sendall(reply)
                except OSError:
                    pass
            if mode in ("close", "reply_close"):
                conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"127.0.0.1:{lsock.getsockname()[1]}"
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        lsock.close()


class FailingProxy:
    """An HTTP proxy to `upstream` that forwards the first `after` requests, then fails every
    later one as `mode` says: `error` (HTTP 503 with a body), `hang` (no answer), `drop`
    (close without an answer), `headers` (headers, then close mid-body), `junk` (200 with a
    body that is not JSON), `nan_values` (200, a matrix whose values are not numbers)."""

    def __init__(self, upstream: str, *, after: int, mode: str) -> None:
        self.upstream, self.after, self.mode = upstream.rstrip("/"), after, mode
        self.count = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy.count += 1
                if proxy.count <= proxy.after:
                    self._forward()
                else:
                    proxy._fail(self)

            def _forward(self) -> None:
                with urllib.request.urlopen(proxy.upstream + self.path, timeout=10) as resp:
                    body = resp.read()
                    status = resp.status
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._hang = threading.Event()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _fail(self, h: BaseHTTPRequestHandler) -> None:
        mode = self.mode
        if mode == "hang":
            self._hang.wait(60)
            return
        if mode == "drop":
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        if mode == "headers":
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", "100000")
            h.end_headers()
            h.wfile.write(b'{"status":"success","data":')
            h.wfile.flush()
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        body = {
            "error": b'{"status":"error","errorType":"unavailable","error":"overloaded"}',
            "junk": b"<html>a login page</html>",
            "nan_values": b'{"status":"success","data":{"resultType":"matrix","result":'
            b'[{"metric":{"__name__":"redis_keyspace_hits_total"},'
            b'"values":[[1764000000,"abc"]]}]}}',
        }[mode]
        h.send_response(503 if mode == "error" else 200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def __enter__(self) -> FailingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hang.set()
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def http_server(body: bytes, status: int = 200) -> Iterator[str]:
    """An HTTP server answering every GET with `body` (as JSON); yields its base URL."""
    with FailingProxy("http://127.0.0.1:1", after=0, mode="junk") as proxy:
        proxy._fail = lambda h: _answer(h, body, status)  # type: ignore[method-assign]
        yield proxy.url


def _answer(h: BaseHTTPRequestHandler, body: bytes, status: int) -> None:
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)
