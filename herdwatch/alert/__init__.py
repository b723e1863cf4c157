"""Alerting: the pure alert book (lifecycle, dedup, grouping, silences), the durable outbox and
the notifiers (SMTP, webhook, Alertmanager). The daemon (herdwatch.daemon) drives them."""

from herdwatch.alert._book import (
    KINDS,
    AlertBook,
    AlertPolicy,
    Matcher,
    Notification,
    Silence,
    alert_key,
    alert_labels,
    parse_matcher,
    plain,
)
from herdwatch.alert._notifiers import (
    AlertmanagerNotifier,
    DeliveryError,
    Notifier,
    Route,
    Router,
    SmtpNotifier,
    WebhookNotifier,
    build_router,
    message_id,
)
from herdwatch.alert._outbox import STATES, Outbox, OutboxRow

__all__ = [
    "KINDS",
    "STATES",
    "AlertBook",
    "AlertPolicy",
    "AlertmanagerNotifier",
    "DeliveryError",
    "Matcher",
    "Notification",
    "Notifier",
    "Outbox",
    "OutboxRow",
    "Route",
    "Router",
    "Silence",
    "SmtpNotifier",
    "WebhookNotifier",
    "alert_key",
    "alert_labels",
    "build_router",
    "message_id",
    "parse_matcher",
    "plain",
]
