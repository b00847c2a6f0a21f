"""One typed reader of settings from the environment, failing fast with the variable's name.

``Env(os.environ)`` reads each kind of value the same way in every service::

    env = Env(source)
    env.number("MPPO_NOTIFY_POLL_SECONDS", 1.0, minimum=0.01)
    env.integer("MPPO_NOTIFY_MAX_ATTEMPTS", 6, minimum=1)
    env.seconds("MPPO_GROUP_HOST_GRACE_SECONDS", 900)     # a timedelta
    env.switch("MPPO_GROUP_SCHEDULER", True)               # on/off, true/false, 1/0
    env.addr("MPPO_SMTP_ADDR")                              # host:port or ""
    env.url("MPPO_NOTIFY_WEBHOOK_URL")                      # http(s) URL or ""
    env.choice("MPPO_RATELIMIT_FAILURE_MODE", ("open", "closed"), "closed")

Malformed values raise :class:`~mppo.platform.config.ConfigError` naming the variable, so a
process refuses to start instead of running with a setting it misread.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import timedelta
from urllib.parse import urlparse

from mppo.platform.config import ConfigError

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class Env:
    """Typed access to a mapping of environment variables."""

    def __init__(self, source: Mapping[str, str]) -> None:
        self._source = source

    def text(self, name: str, default: str = "") -> str:
        """The stripped value, or `default` when unset or blank."""
        return self._source.get(name, "").strip() or default

    def required(self, name: str) -> str:
        """The value; ConfigError when it is unset or blank."""
        value = self.text(name)
        if not value:
            raise ConfigError(f"{name} is not set (see docs/conventions.md)")
        return value

    def number(
        self,
        name: str,
        default: float,
        *,
        minimum: float | None = 0.0,
        maximum: float | None = None,
    ) -> float:
        """A finite float within [minimum, maximum]."""
        raw = self.text(name)
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"{name}={raw!r} is not a finite number")
        self._bounded(name, value, minimum, maximum)
        return value

    def integer(
        self,
        name: str,
        default: int,
        *,
        minimum: int | None = 0,
        maximum: int | None = None,
    ) -> int:
        """An integer within [minimum, maximum]."""
        raw = self.text(name)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a whole number") from None
        self._bounded(name, value, minimum, maximum)
        return value

    def seconds(
        self, name: str, default: float, *, minimum: float = 0.0, maximum: float | None = None
    ) -> timedelta:
        """A duration given in (possibly fractional) seconds."""
        return timedelta(seconds=self.number(name, default, minimum=minimum, maximum=maximum))

    def switch(self, name: str, default: bool) -> bool:
        """on/off, true/false, yes/no or 1/0."""
        raw = self.text(name).lower()
        if not raw:
            return default
        if raw in _TRUE:
            return True
        if raw in _FALSE:
            return False
        raise ConfigError(f"{name}={raw!r} must be on or off")

    def choice(self, name: str, choices: Sequence[str], default: str) -> str:
        """One of `choices` (case-insensitive)."""
        raw = self.text(name).lower() or default
        if raw not in choices:
            raise ConfigError(f"{name}={raw!r} must be one of {', '.join(choices)}")
        return raw

    def addr(self, name: str, default: str = "") -> str:
        """`host:port`, or `default` when unset."""
        value = self.text(name, default)
        if value:
            host, sep, port = value.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ConfigError(f"{name}={value!r} is not host:port")
        return value

    def url(self, name: str, default: str = "") -> str:
        """An http(s) URL, or `default` when unset."""
        value = self.text(name, default)
        if value:
            parsed = urlparse(value)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ConfigError(f"{name}={value!r} must be an http(s) URL")
        return value

    @staticmethod
    def _bounded(name: str, value: float, minimum: float | None, maximum: float | None) -> None:
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name} must be at least {minimum:g}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name} must be at most {maximum:g}")
