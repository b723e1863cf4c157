"""No secret reaches the daemon's output (issue 9): a replay drill whose webhook URL carries a
token and whose SMTP password comes from password_env, through a real aiosmtpd (with AUTH) and a
loopback HTTP hook that first fails with an error page echoing the URL it was called on. The
secrets must appear in no log line, no stdout/stderr, no mail and no webhook body."""

from __future__ import annotations

import email
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
STAMPEDE = ROOT / "fixtures" / "incidents" / "real_cache_stampede"
TOKEN = "tok-S3cr3t:w/@%é"
PASSWORD = "pw-@:/%Zü-P4ssw0rd"
#: a part of each secret that survives any quoting (%-encoding, +, JSON escapes): if it is
#: anywhere, some form of the secret is
MARKERS = ("S3cr3t", "P4ssw0rd")


@contextmanager
def smtp_with_auth() -> Iterator[tuple[int, list[Message], list[str]]]:
    """aiosmtpd on a free loopback port accepting AUTH (without TLS) for user `hw`: (port, the
    messages, the passwords it was given)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    port, messages, passwords = free_port(), [], []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            messages.append(email.message_from_bytes(envelope.content))
            return "250 OK"

    def auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.login == b"hw"
        if ok:
            passwords.append(data.password.decode())
        return AuthResult(success=ok)

    c = Controller(
        Handler(), hostname="127.0.0.1", port=port, authenticator=auth, auth_require_tls=False
    )
    c.start()
    try:
        yield port, messages, passwords
    finally:
        c.stop()


@contextmanager
def hook_failing_once() -> Iterator[tuple[str, list[bytes]]]:
    """An HTTP hook whose first POST gets a 500 page quoting the request line (URL and all)."""
    port, bodies = free_port(), []

    class H(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            status, page = (500, f"cannot handle {self.requestline}") if len(bodies) == 1 else (
                200, "ok"
            )  # fmt: skip
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.end_headers()
            self.wfile.write(page.encode())

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", port), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}/hook", bodies
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.timeout(120)
def test_a_replay_drill_leaks_no_secret(tmp_path: Path) -> None:
    with smtp_with_auth() as (smtp_port, messages, passwords), hook_failing_once() as (url, bodies):
        from urllib.parse import quote

        # a Slack-style URL: the token is a path segment, which no pattern could recognise
        hook_url = f"{url}/{quote(TOKEN, safe='@:')}"
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(
            "alerts:\n"
            f"  smtp: {{host: 127.0.0.1, port: {smtp_port}, starttls: false, username: hw,"
            " password_env: HW_SMTP_PASSWORD, from: hw@example.com, to: [oncall@example.com],"
            " timeout: 2s}\n"
            "  webhook: {url_env: HW_HOOK_URL, timeout: 2s}\n"
            f"  outbox: '{tmp_path / 'outbox.db'}'\n"
        )
        r = subprocess.run(
            [sys.executable, "-m", "herdwatch", "daemon", "--config", str(cfg), "-v",
             "--replay", str(STAMPEDE), "--speed", "max", "--listen", f"127.0.0.1:{free_port()}"],
            cwd=ROOT, capture_output=True, text=True, timeout=100,
            env={**os.environ, "HW_SMTP_PASSWORD": PASSWORD, "HW_HOOK_URL": hook_url},
        )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert passwords and set(passwords) == {PASSWORD}  # the secret was used...
    assert len(bodies) >= 2 and messages  # ...and the hook failed once, then was delivered
    assert "HTTP 500" in r.stderr  # the failure was logged (its page quotes the URL)
    outputs = {"stdout": r.stdout, "stderr": r.stderr}
    for i, m in enumerate(messages):
        outputs[f"mail {i}"] = m.as_string() + "".join(
            str(p.get_payload(decode=True) or b"", "utf-8", "replace") for p in m.walk()
        )
    for i, b in enumerate(bodies):
        outputs[f"webhook body {i}"] = b.decode("utf-8", "replace")
        json.loads(b)
    for marker in MARKERS:
        for where, text in outputs.items():
            assert marker not in text, f"{marker!r} in {where}: {text[:3000]}"


def test_a_webhook_url_comes_from_url_env_or_url_file_and_is_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from herdwatch.config import load_config, redact
    from herdwatch.errors import ConfigError

    url = "https://hooks.example.com/services/T0/B0/S3cr3tXYZ"
    (tmp_path / "hook").write_text(url + "\n")
    monkeypatch.setenv("HOOK", url)  # secrets are read from the process' environment
    for key, value in (("url_env", "HOOK"), ("url_file", "hook")):
        (tmp_path / "h.yaml").write_text(
            f"alerts:\n  webhook: {{{key}: '{tmp_path / value if key == 'url_file' else value}'}}\n"
        )
        cfg = load_config(tmp_path / "h.yaml", environ={}, discover=False)
        assert cfg.alerts.webhook is not None and cfg.alerts.webhook.url == url
        assert "S3cr3t" not in redact(f"POST {url} failed; url: /services/T0/B0/S3cr3tXYZ")
    (tmp_path / "h.yaml").write_text(f"alerts:\n  webhook: {{url: '{url}?token=S3cr3t'}}\n")
    with pytest.raises(ConfigError, match=r"alerts\.webhook\.url_env") as info:
        load_config(tmp_path / "h.yaml", environ={}, discover=False)
    assert "S3cr3t" not in str(info.value)
    (tmp_path / "h.yaml").write_text("alerts:\n  webhook: {url_env: HOOK}\n")
    monkeypatch.setenv("HOOK", "S3cr3t")
    with pytest.raises(ConfigError, match="does not hold an http") as info:
        load_config(tmp_path / "h.yaml", environ={}, discover=False)
    assert "S3cr3t" not in str(info.value)
