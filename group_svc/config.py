"""Configuration of the group service, read from the environment once at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from mppo.platform.config import ServiceConfig, service_addr
from mppo.platform.settings import Env


def load_config() -> ServiceConfig:
    """The group service's shared settings (docs/conventions.md lists the variables)."""
    return ServiceConfig.from_env("group")


@dataclass(frozen=True)
class GroupSettings:
    """Settings only the group service has.

    | variable | meaning | default |
    | --- | --- | --- |
    | MPPO_PAYMENT_ADDR | the payment service | 127.0.0.1:50052 |
    | MPPO_ORDER_ADDR | the order service (prices a group's cart) | 127.0.0.1:50053 |
    | MPPO_GROUP_HOST_GRACE_SECONDS | host's grace after HOST_PAYS_REMAINING | 900 |
    | MPPO_GROUP_HOLD_MARGIN_SECONDS | a group is due this long before a hold lapses (note) | 3600 |
    | MPPO_GROUP_REMINDER_LEAD_SECONDS | group.reminder_due this long before the deadline | 3600 |
    | MPPO_GROUP_DEFAULT_DEADLINE_SECONDS | deadline of a group created without one | 86400 |
    | MPPO_GROUP_SCHEDULER | run the expiry scheduler in the service (`on`/`off`) | on |
    | MPPO_GROUP_SCHEDULER_INTERVAL | seconds between scheduler rounds | 1.0 |
    | MPPO_GROUP_SCHEDULER_ADDR | health address of the standalone scheduler | free port |
    | MPPO_GROUP_PII_KEYS | `id:<base64 32 bytes>,…`, first is active (adapters/pii.py) | dev key |

    The hold margin is the order saga's time to capture every share before a hold lapses
    (docs/payment.md, "Holds that never lapse"); keep it below the payment service's
    MPPO_PAYMENT_AUTH_WARNING_SECONDS, or a warned group is due at once.
    """

    payment_addr: str
    host_grace: timedelta
    reminder_lead: timedelta
    scheduler_enabled: bool
    scheduler_interval: float
    scheduler_addr: str = ""
    payment_timeout: float = 10.0
    order_addr: str = "127.0.0.1:50053"
    order_timeout: float = 10.0
    hold_margin: timedelta = timedelta(hours=1)
    default_deadline: timedelta = timedelta(hours=24)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GroupSettings:
        """Read the settings, failing fast on malformed values."""
        source = os.environ if env is None else env
        read = Env(source)
        return cls(
            payment_addr=service_addr(source, "payment"),
            order_addr=service_addr(source, "order"),
            host_grace=read.seconds("MPPO_GROUP_HOST_GRACE_SECONDS", 900),
            reminder_lead=read.seconds("MPPO_GROUP_REMINDER_LEAD_SECONDS", 3600),
            hold_margin=read.seconds("MPPO_GROUP_HOLD_MARGIN_SECONDS", 3600),
            default_deadline=read.seconds("MPPO_GROUP_DEFAULT_DEADLINE_SECONDS", 86400, minimum=60),
            scheduler_enabled=read.switch("MPPO_GROUP_SCHEDULER", True),
            scheduler_interval=read.number("MPPO_GROUP_SCHEDULER_INTERVAL", 1.0, minimum=0.01),
            scheduler_addr=read.addr("MPPO_GROUP_SCHEDULER_ADDR"),
        )
