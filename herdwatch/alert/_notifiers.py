"""Notifiers: SMTP (aiosmtplib), a webhook (JSON or Slack blocks) and Alertmanager's API v2.

Each takes one Notification from the outbox and either returns (accepted) or raises
DeliveryError (`retry=False` when the receiver refused it for good: a 4xx, an SMTP 5xx). The
Router says which notifiers a notification goes to: by severity and signature (an empty list
accepts all), keep-alives only to notifiers that need them (Alertmanager).

Idempotency: SMTP's Message-ID, the webhook's `Idempotency-Key` header and Alertmanager's own
dedup by labels all derive from the notification's key, so a redelivery after a crash is
recognisable (Alertmanager merges it; a mail client threads it as the same message).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Protocol

import requests

from herdwatch.alert._book import Notification, alert_labels, plain
from herdwatch.alert._render import chart_svg, mail_html, mail_text, slack_payload
from herdwatch.config import (
    AlertmanagerConfig,
    AlertsConfig,
    SmtpConfig,
    WebhookConfig,
    redact,
    resolve_secret,
)
from herdwatch.errors import HerdwatchError

__all__ = [
    "AlertmanagerNotifier",
    "DeliveryError",
    "Notifier",
    "Route",
    "Router",
    "SmtpNotifier",
    "WebhookNotifier",
    "build_router",
    "message_id",
]

log = logging.getLogger("herdwatch.alert")


class DeliveryError(HerdwatchError):
    """A notifier did not accept a notification; `retry` False when it never will."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(redact(message))
        self.retry = retry


class Notifier(Protocol):
    """Delivers notifications. `heartbeat`: it wants keep-alives of firing alerts;
    `coalesce`: only the newest queued notification of a group matters to it."""

    name: str
    heartbeat: bool
    coalesce: bool

    async def send(self, n: Notification) -> None: ...


def message_id(key: str, domain: str = "herdwatch") -> str:
    """The Message-ID of a notification's mail: the same for the same idempotency key."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _http_error(name: str, exc: requests.RequestException) -> DeliveryError:
    return DeliveryError(f"{name}: {type(exc).__name__}: {exc}")


def _check_status(name: str, r: requests.Response) -> None:
    if r.status_code < 300:
        return
    # 408 and 429 say "later"; other client errors will not change on a retry
    retry = r.status_code >= 500 or r.status_code in (408, 429)
    raise DeliveryError(f"{name}: HTTP {r.status_code}: {r.text[:200]}", retry=retry)


class SmtpNotifier:
    """Mail through aiosmtplib: STARTTLS or TLS, optional auth, a text and an HTML part, each
    alert's chart as an inline SVG (Content-ID), the Message-ID from the idempotency key."""

    heartbeat = False
    coalesce = False

    def __init__(self, cfg: SmtpConfig, *, name: str = "smtp") -> None:
        self.name, self.cfg = name, cfg
        self._password = resolve_secret(
            cfg.password_env, cfg.password_file, key="alerts.smtp.password"
        )

    def message(self, n: Notification) -> EmailMessage:
        """The mail for `n` (multipart/alternative; the HTML part carries the charts)."""
        msg = EmailMessage()
        # Every text that leaves is redacted (a secret in a finding's evidence, a label...).
        msg["Subject"] = redact(n.title)
        msg["From"] = self.cfg.from_addr
        msg["To"] = ", ".join(self.cfg.to)
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = message_id(n.key)
        if n.kind != "firing":
            msg["References"] = message_id(f"{n.group}/firing")
        msg["X-Herdwatch-Key"] = n.key
        msg.set_content(redact(mail_text(n)))
        charts = {}
        for a in n.alerts:
            svg = chart_svg(a.get("timeline", []), a["onset"])
            if svg:
                charts[a["id"]] = (
                    hashlib.sha1(f"{n.key}/{a['id']}".encode()).hexdigest()[:16] + "@herdwatch",
                    svg,
                )
        html = redact(mail_html(n, {k: v[0] for k, v in charts.items()}))
        msg.add_alternative(html, subtype="html")
        html_part = msg.get_payload()[1]  # type: ignore[index]
        assert isinstance(html_part, EmailMessage)
        for aid, (cid, svg) in charts.items():
            html_part.add_related(
                svg.encode(),
                maintype="image",
                subtype="svg+xml",
                cid=f"<{cid}>",
                filename=f"{aid}.svg",
                disposition="inline",
            )
        return msg

    async def send(self, n: Notification) -> None:
        import aiosmtplib

        c = self.cfg
        try:
            await aiosmtplib.send(
                self.message(n),
                hostname=c.host,
                port=c.port,
                use_tls=c.tls,
                start_tls=False if c.tls else c.starttls,
                username=c.username,
                password=self._password if c.username else None,
                timeout=c.timeout,
            )
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"{self.name}: {exc.code} {exc.message}", retry=exc.code < 500
            ) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryError(f"{self.name}: {type(exc).__name__}: {exc}") from None


class WebhookNotifier:
    """POST the notification as JSON (herdwatch's payload, or Slack blocks with format: slack)
    with an `Idempotency-Key` header."""

    heartbeat = False
    coalesce = False

    def __init__(self, cfg: WebhookConfig, *, name: str = "webhook") -> None:
        self.name, self.cfg = name, cfg
        self._session = requests.Session()

    def body(self, n: Notification) -> dict[str, Any]:
        if self.cfg.format == "slack":
            return slack_payload(n)
        return {
            "version": 1,
            "key": n.key,
            "kind": n.kind,
            "status": _status(n),
            "title": n.title,
            "group": n.group,
            "at": n.at,
            "alerts": [plain({k: v for k, v in a.items() if k != "timeline"}) for a in n.alerts],
        }

    async def send(self, n: Notification) -> None:
        data = json.dumps(_redacted(self.body(n)), allow_nan=False)
        headers = {"Content-Type": "application/json", "Idempotency-Key": n.key}
        try:
            r = await asyncio.to_thread(
                self._session.post,
                self.cfg.url,
                data=data,
                headers=headers,
                timeout=self.cfg.timeout,
            )
        except requests.RequestException as exc:
            raise _http_error(self.name, exc) from None
        _check_status(self.name, r)


def _redacted(body: Any) -> Any:
    """A JSON body with every string value redacted, keys and structure kept: redacting the
    serialized text would take the `"signature": "cache_stampede"` field for a secret."""
    if isinstance(body, str):
        return redact(body)
    if isinstance(body, dict):
        return {k: _redacted(v) for k, v in body.items()}
    if isinstance(body, list | tuple):
        return [_redacted(v) for v in body]
    return body


def _status(n: Notification) -> str:
    return "resolved" if n.kind == "resolved" else "firing"


class AlertmanagerNotifier:
    """POST /api/v2/alerts: labels alertname (= signature), severity and the subject's labels;
    annotations summary, recommendations, runbook_url. A firing alert is posted with endsAt
    4 x `resend` ahead and posted again every `resend` (keep-alives), as Prometheus does; the
    resolve posts endsAt = the herd's end. `shift` (seconds) moves the recording's times to now
    for a replay drill."""

    heartbeat = True
    coalesce = True

    def __init__(self, cfg: AlertmanagerConfig, *, name: str = "alertmanager") -> None:
        self.name, self.cfg = name, cfg
        self._session = requests.Session()

    def alerts(self, n: Notification) -> list[dict[str, Any]]:
        shift = float(n.alerts[0].get("shift", 0.0)) if n.alerts else 0.0
        out = []
        for a in n.alerts:
            ann = {"summary": a["summary"], "herdwatch_id": a["id"]}
            recs = a.get("recommendations") or []
            if recs:
                ann["recommendations"] = "\n".join(
                    f"{i}. {r.get('action', '')}: {r.get('detail', '')}"
                    for i, r in enumerate(recs, 1)
                )
            if self.cfg.runbook_url:
                ann["runbook_url"] = self.cfg.runbook_url.replace("{signature}", a["signature"])
            if n.kind == "resolved":
                ends = max(a["end"], a["onset"]) + shift
            else:
                ends = n.at + shift + 4 * self.cfg.resend
            out.append(
                {
                    "labels": alert_labels(a),
                    "annotations": ann,
                    "startsAt": _iso(a["onset"] + shift),
                    "endsAt": _iso(ends),
                }
            )
        return out

    async def send(self, n: Notification) -> None:
        url = self.cfg.url.rstrip("/") + "/api/v2/alerts"
        try:
            r = await asyncio.to_thread(
                self._session.post,
                url,
                data=json.dumps(_redacted(self.alerts(n)), allow_nan=False),
                headers={"Content-Type": "application/json"},
                timeout=self.cfg.timeout,
            )
        except requests.RequestException as exc:
            raise _http_error(self.name, exc) from None
        _check_status(self.name, r)


@dataclass(frozen=True, slots=True)
class Route:
    """Which notifications `notifier` takes: severities and signatures (empty: all)."""

    notifier: Notifier
    severities: tuple[str, ...] = ()
    signatures: tuple[str, ...] = ()

    def accepts(self, n: Notification) -> bool:
        if n.kind == "heartbeat" and not self.notifier.heartbeat:
            return False
        return any(
            (not self.severities or a["severity"] in self.severities)
            and (not self.signatures or a["signature"] in self.signatures)
            for a in n.alerts
        )


class Router:
    """The configured notifiers and their routes."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = list(routes)
        self.by_name = {r.notifier.name: r.notifier for r in self.routes}

    def targets(self, n: Notification) -> list[str]:
        return [r.notifier.name for r in self.routes if r.accepts(n)]

    @property
    def coalescing(self) -> set[str]:
        return {r.notifier.name for r in self.routes if r.notifier.coalesce}

    @property
    def heartbeat(self) -> bool:
        return any(r.notifier.heartbeat for r in self.routes)


def build_router(cfg: AlertsConfig) -> Router:
    """A Router over the notifiers `alerts:` configures (ConfigError for a missing secret)."""
    routes: list[Route] = []
    if cfg.smtp is not None:
        routes.append(Route(SmtpNotifier(cfg.smtp), cfg.smtp.severities, cfg.smtp.signatures))
    if cfg.webhook is not None:
        w = cfg.webhook
        routes.append(Route(WebhookNotifier(w), w.severities, w.signatures))
    if cfg.alertmanager is not None:
        am = cfg.alertmanager
        routes.append(Route(AlertmanagerNotifier(am), am.severities, am.signatures))
    return Router(routes)
