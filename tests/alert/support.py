"""Test helpers for alerting: Snapshots built by hand, a real aiosmtpd server, a real HTTP
receiver on a free loopback port."""

from __future__ import annotations

import email
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from herdwatch.engine.snapshot import SignalView, Snapshot, TickCost, TrackedFinding
from herdwatch.model import Finding
from tests.support.servers import free_port


def finding(
    sig: str = "cache_stampede",
    onset: float = 1000.0,
    end: float = 1010.0,
    subject: tuple[tuple[str, str], ...] = (("instance", "redis-1:9121"),),
    severity: str = "critical",
) -> Finding:
    return Finding(
        sig,
        onset,
        end,
        severity,
        f"{sig} summary",
        {"miss_ratio": {"z": 9.5}},
        signals=("miss_ratio",),
        subject=subject,
    )


def tracked(f: Finding, state: str = "active", fid: str | None = None) -> TrackedFinding:
    return TrackedFinding(fid or f"{f.signature}-{int(f.onset)}", state, f, f.onset, f.end)


def snap(at: float, *findings: TrackedFinding) -> Snapshot:
    t = np.arange(at - 300, at, 1.0)
    view = SignalView(
        "miss_ratio", (("instance", "redis-1:9121"),), t, np.sin(t), 0.0, 0.0, 0.0, 1.0
    )
    return Snapshot(
        at, (at - 600, at), (view,), tuple(findings), (), (), TickCost(0, 0, 0), result=None
    )  # type: ignore[arg-type]


@dataclass
class Mailbox:
    port: int
    messages: list[Message] = field(default_factory=list)

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]


@contextmanager
def smtp_server(port: int | None = None) -> Iterator[Mailbox]:
    """A real aiosmtpd SMTP server on a free loopback port, keeping every message."""
    from aiosmtpd.controller import Controller

    box = Mailbox(port or free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            box.messages.append(email.message_from_bytes(envelope.content))
            return "250 OK"

    c = Controller(Handler(), hostname="127.0.0.1", port=box.port)
    c.start()
    try:
        yield box
    finally:
        c.stop()


@dataclass
class Inbox:
    url: str
    requests: list[tuple[dict[str, str], Any]] = field(default_factory=list)
    status: int = 200


@contextmanager
def http_receiver() -> Iterator[Inbox]:
    """A real HTTP server on a free loopback port that records each POST (headers, JSON)."""
    port = free_port()
    inbox = Inbox(f"http://127.0.0.1:{port}/hook")

    class H(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            inbox.requests.append((dict(self.headers), json.loads(body)))
            self.send_response(inbox.status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", port), H)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield inbox
    finally:
        srv.shutdown()
        srv.server_close()
