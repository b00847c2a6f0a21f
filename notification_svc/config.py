"""Configuration of the notification service, read from the environment once at start.

Besides the shared settings (docs/conventions.md):

| variable | meaning | default |
| --- | --- | --- |
| `MPPO_SMTP_ADDR` | SMTP server `host:port` for e-mail | see below |
| `MPPO_SMTP_SINK_ADDR` | HTTP API of the local SMTP sink (set by `mppo dev up`) | unset |
| `MPPO_NOTIFY_FROM` | From: header | `MPPO <no-reply@mppo.local>` |
| `MPPO_NOTIFY_WEBHOOK_URL` | client app's webhook endpoint; unset = no webhooks | unset |
| `MPPO_NOTIFY_WEBHOOK_SECRET` | HMAC secret for `Mppo-Signature`; required with the URL | unset |
| `MPPO_NOTIFY_MAX_ATTEMPTS` | delivery attempts before FAILED | `6` |
| `MPPO_NOTIFY_RETRY_BASE_SECONDS` | first retry delay, doubling each time | `1.0` |
| `MPPO_NOTIFY_RETRY_MAX_SECONDS` | longest retry delay | `300` |
| `MPPO_NOTIFY_POLL_SECONDS` | how often the sender looks for due rows (new rows wake it) | `1.0` |
| `MPPO_NOTIFY_SETTLE_SECONDS` | how long expiry notices wait for void/refund facts | `30` |
| `MPPO_NOTIFY_SEND_TIMEOUT_SECONDS` | timeout of one SMTP or webhook delivery | `10` |
| `MPPO_GROUP_PAGE_URL` | public base URL of the group page (`none`: no page links) | below |

Without `MPPO_SMTP_ADDR`, e-mail goes to the SMTP port the local sink announces at
`GET http://$MPPO_SMTP_SINK_ADDR/info` (`mppo dev up` sets `MPPO_SMTP_SINK_ADDR`), else to
`127.0.0.1:8025`.

Invitations, reminders and the host's fallback request link to the member's group page,
`<MPPO_GROUP_PAGE_URL>/g/<group id>#<invite token>` (gateway/group_page.py), and name the
provider's page after it. Without `MPPO_GROUP_PAGE_URL` the gateway `mppo dev up` announces
(`http://$MPPO_GATEWAY_ADDR`) is used; with neither, e-mails carry the provider's link alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from mppo.platform.config import ConfigError, ServiceConfig, service_addr
from mppo.platform.settings import Env

DEFAULT_SMTP_ADDR = "127.0.0.1:8025"
DEFAULT_FROM = "MPPO <no-reply@mppo.local>"


@dataclass(frozen=True)
class NotificationConfig(ServiceConfig):
    """The notification service's settings (see the module docstring for the variables)."""

    group_addr: str = "127.0.0.1:50051"
    smtp_addr: str = ""
    smtp_sink_addr: str = ""
    mail_from: str = DEFAULT_FROM
    webhook_url: str = ""
    webhook_secret: str = ""
    max_attempts: int = 6
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    poll_seconds: float = 1.0
    settle_seconds: float = 30.0
    send_timeout_seconds: float = 10.0
    group_page_url: str = ""

    @property
    def webhook_enabled(self) -> bool:
        """Whether notifications also go to the client app's webhook."""
        return bool(self.webhook_url)

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] | None = None) -> NotificationConfig:
        """Read every setting; raises ConfigError on a malformed or inconsistent one."""
        source = os.environ if env is None else env
        base = ServiceConfig.from_env(service, source)
        read = Env(source)
        webhook_url = read.url("MPPO_NOTIFY_WEBHOOK_URL")
        webhook_secret = read.text("MPPO_NOTIFY_WEBHOOK_SECRET")
        if webhook_url and not webhook_secret:
            raise ConfigError("MPPO_NOTIFY_WEBHOOK_SECRET is required with the webhook URL")
        return cls(
            name=base.name,
            addr=base.addr,
            infra=base.infra,
            log_level=base.log_level,
            group_addr=service_addr(source, "group"),
            smtp_addr=read.addr("MPPO_SMTP_ADDR"),
            smtp_sink_addr=read.addr("MPPO_SMTP_SINK_ADDR"),
            mail_from=read.text("MPPO_NOTIFY_FROM", DEFAULT_FROM),
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            max_attempts=read.integer("MPPO_NOTIFY_MAX_ATTEMPTS", 6, minimum=1),
            retry_base_seconds=read.number("MPPO_NOTIFY_RETRY_BASE_SECONDS", 1.0),
            retry_max_seconds=read.number("MPPO_NOTIFY_RETRY_MAX_SECONDS", 300.0),
            poll_seconds=read.number("MPPO_NOTIFY_POLL_SECONDS", 1.0, minimum=0.01),
            settle_seconds=read.number("MPPO_NOTIFY_SETTLE_SECONDS", 30.0),
            send_timeout_seconds=read.number("MPPO_NOTIFY_SEND_TIMEOUT_SECONDS", 10.0, minimum=0.1),
            group_page_url=_group_page_url(source, read),
        )


def _group_page_url(source: Mapping[str, str], read: Env) -> str:
    """`MPPO_GROUP_PAGE_URL`, else the gateway `mppo dev up` announces; "" for none."""
    if source.get("MPPO_GROUP_PAGE_URL", "").strip().lower() == "none":
        return ""
    gateway = source.get("MPPO_GATEWAY_ADDR", "").strip()
    return read.url("MPPO_GROUP_PAGE_URL", f"http://{gateway}" if gateway else "")


def load_config() -> NotificationConfig:
    """The notification service's settings, from the process environment."""
    return NotificationConfig.from_env("notification")
