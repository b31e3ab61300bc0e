"""Alerts: always logged; also POSTed as JSON to KENNEL_ALERT_WEBHOOK when it is set."""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from typing import Any

WEBHOOK_ENV = "KENNEL_ALERT_WEBHOOK"


def send_alert(message: str, details: dict[str, Any] | None = None, log: Any = None) -> bool:
    """Log the alert and post it to the webhook if configured; True when the webhook accepted it.

    A webhook that is down must not break the sensor or run that raises the alert: failures are logged.
    """
    log = log or logging.getLogger("kennel.monitoring.alerts")
    log.warning(f"ALERT: {message}")
    url = os.environ.get(WEBHOOK_ENV)
    if not url:
        return False
    body = json.dumps({"text": message, "details": details or {}}, default=str).encode()
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return 200 <= response.status < 300
    except OSError as exc:
        log.error(f"alert webhook {url} failed: {exc}")
        return False
