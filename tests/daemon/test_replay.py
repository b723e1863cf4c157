"""`herdwatch daemon --replay` through real notifiers: aiosmtpd, Alertmanager, an HTTP hook.

Each daemon is a child process (signals, kill -9 and restarts are real); the recording is
fixtures/incidents/real_cache_stampede (6 min at 1 s, one stampede)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.alert.support import http_receiver, smtp_server
from tests.daemon.support import (
    ROOT,
    STAMPEDE,
    metrics,
    outbox_states,
    start_daemon,
    stop,
    wait_for,
)
from tests.support.servers import free_port, start_alertmanager

pytestmark = pytest.mark.timeout(240)


def smtp_cfg(tmp_path: Path, port: int, extra: str = "") -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "alerts:\n"
        f"  smtp: {{host: 127.0.0.1, port: {port}, starttls: false, from: hw@example.com,"
        " to: [oncall@example.com], timeout: 2s}\n" + extra
    )
    return cfg


def run(cfg: Path, *args: str, timeout: float = 200) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "herdwatch", "daemon", "--config", str(cfg), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_one_mail_per_herd_and_one_resolve(tmp_path: Path) -> None:
    with smtp_server() as box, http_receiver() as hook:
        cfg = smtp_cfg(tmp_path, box.port, f"  webhook: {{url: '{hook.url}'}}\n")
        port = free_port()
        r = run(cfg, "--replay", str(STAMPEDE), "--speed", "max", "--listen", f"127.0.0.1:{port}")
        assert r.returncode == 0, r.stderr[-2000:]
        subjects = box.subjects()
        assert len(subjects) == 2, subjects
        firing, resolved = box.messages
        assert str(firing["Subject"]).startswith("[FIRING] cache_stampede instance=")
        assert str(resolved["Subject"]).startswith("[RESOLVED] cache_stampede")
        types = [p.get_content_type() for p in firing.walk()]
        assert "text/plain" in types and "text/html" in types and "image/svg+xml" in types
        svg = next(p for p in firing.walk() if p.get_content_type() == "image/svg+xml")
        assert b"<path" in svg.get_payload(decode=True)
        html = next(p for p in firing.walk() if p.get_content_type() == "text/html")
        text = html.get_payload(decode=True).decode()
        assert "cid:" in text and "Recommendations" in text
        assert firing["Message-ID"] != resolved["Message-ID"]
        assert len(hook.requests) == 2
        headers, body = hook.requests[0]
        assert headers["Idempotency-Key"] == "cache_stampede-90ad796b/firing"
        assert body["status"] == "firing" and body["alerts"][0]["signature"] == "cache_stampede"


def test_alertmanager_receives_the_alert_then_its_resolve(tmp_path: Path) -> None:
    with start_alertmanager(workdir=tmp_path / "am") as am:
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(f"alerts:\n  alertmanager: {{url: '{am.url}', resend: 30s}}\n")
        r = run(cfg, "--replay", str(STAMPEDE), "--speed", "max", "--listen", "127.0.0.1:0")
        assert r.returncode == 0, r.stderr[-2000:]
        url = f"{am.url}/api/v2/alerts?active=true&silenced=true&inhibited=true"
        with urllib.request.urlopen(url, timeout=5) as resp:
            alerts = json.load(resp)
        # the drill's times are the recording's shifted to now: the resolve's endsAt lies
        # as far after the drill's start as the herd's end after the recording's start
        mine = [a for a in alerts if a["labels"]["alertname"] == "cache_stampede"]
        assert len(mine) == 1, alerts
        a = mine[0]
        assert a["labels"]["severity"] == "critical" and "instance" in a["labels"]
        assert "summary" in a["annotations"] and "recommendations" in a["annotations"]
        assert a["endsAt"] > a["startsAt"]


def test_smtp_down_then_up_delivers_exactly_once(tmp_path: Path) -> None:
    port = free_port()
    cfg = smtp_cfg(tmp_path, port, "daemon: {drain_timeout: 100s}\n")
    box_path = tmp_path / "outbox.db"
    log = tmp_path / "d.log"
    p = start_daemon(
        cfg,
        "--replay",
        str(STAMPEDE),
        "--speed",
        "max",
        "--outbox",
        str(box_path),
        "--listen",
        "127.0.0.1:0",
        log=log,
    )
    try:
        # the server comes up only after a delivery attempt failed (not merely after the
        # enqueue: under load the first attempt can come after a server started then)
        wait_for(lambda: "not delivered" in log.read_text(), 120, "a failed attempt")
        with smtp_server(port) as box:
            assert p.wait(120) == 0, log.read_text()[-2000:]
            assert [s.split(" ")[0] for s in box.subjects()] == ["[FIRING]", "[RESOLVED]"]
        assert {s[2] for s in outbox_states(box_path)} == {"sent"}
    finally:
        stop(p, signal.SIGKILL)


def test_a_drill_through_an_unreachable_notifier_ends_and_keeps_the_alerts(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there
    cfg = smtp_cfg(tmp_path, port, "daemon: {drain_timeout: 2s}\n")
    box_path = tmp_path / "outbox.db"
    done = run(cfg, "--replay", str(STAMPEDE), "--speed", "max", "--outbox", str(box_path),
               "--listen", "127.0.0.1:0", timeout=120)  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert "not delivered within daemon.drain_timeout (2s)" in done.stderr.splitlines()[-1]
    assert {s[2] for s in outbox_states(box_path)} == {"queued"}
    # without --outbox the drill's own outbox is kept, not deleted with what it holds
    done = run(cfg, "--replay", str(STAMPEDE), "--speed", "max", "--listen", "127.0.0.1:0",
               timeout=120)  # fmt: skip
    assert done.returncode == 1
    kept = Path(done.stderr.rsplit("--outbox ", 1)[1].split()[0])
    assert {s[2] for s in outbox_states(kept)} == {"queued"}
    kept.unlink()


def test_killed_between_enqueue_and_delivery_delivers_after_restart(tmp_path: Path) -> None:
    port = free_port()
    cfg = smtp_cfg(tmp_path, port)
    box_path = tmp_path / "outbox.db"
    log = tmp_path / "d.log"
    args = (
        "--replay",
        str(STAMPEDE),
        "--speed",
        "max",
        "--outbox",
        str(box_path),
        "--listen",
        "127.0.0.1:0",
    )
    p = start_daemon(cfg, *args, log=log)
    wait_for(lambda: any(s[2] == "queued" for s in outbox_states(box_path)), 120, "enqueue")
    assert stop(p, signal.SIGKILL) == -signal.SIGKILL
    assert outbox_states(box_path)[0][2] == "queued"
    with smtp_server(port) as box:
        p = start_daemon(cfg, *args, log=log)
        assert p.wait(120) == 0, log.read_text()[-2000:]
        firing = [s for s in box.subjects() if s.startswith("[FIRING]")]
        assert len(firing) == 1, box.subjects()


def test_sighup_with_a_broken_config_keeps_the_old_one(tmp_path: Path) -> None:
    with smtp_server() as box:
        cfg = smtp_cfg(tmp_path, box.port)
        port = free_port()
        log = tmp_path / "d.log"
        p = start_daemon(
            cfg,
            "--replay",
            str(STAMPEDE),
            "--speed",
            "20",
            "--listen",
            f"127.0.0.1:{port}",
            log=log,
        )
        try:
            wait_for(lambda: "herdwatch_ticks_total" in metrics(port), 60, "/metrics")
            cfg.write_text("alerts:\n  smtp: {host: 127.0.0.1, port: nope}\n")
            p.send_signal(signal.SIGHUP)
            wait_for(lambda: "reload failed" in log.read_text(), 20, "the reload line")
            assert p.poll() is None
            assert 'herdwatch_config_reloads_total{result="failed"} 1.0' in metrics(port)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                assert json.load(r)["status"] == "ok"
            lines = [x for x in log.read_text().splitlines() if "reload failed" in x]
            assert len(lines) == 1 and "alerts.smtp.port" in lines[0]
            assert stop(p) == 0  # SIGTERM: drain, exit 0
        finally:
            stop(p, signal.SIGKILL)
