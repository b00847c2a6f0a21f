"""Which payment providers members may choose, which one is the default, and how long each one
holds an authorization: one reading of the environment shared by the payment service (which
builds the providers) and the group service (which refuses choices and deadlines they cannot
honour).

| variable | meaning | default |
| --- | --- | --- |
| MPPO_PAYMENT_PROVIDERS | providers members may choose (comma list) | those keyed (below) |
| MPPO_PAYMENT_DEFAULT_PROVIDER | provider of a member who names none | sandbox (dev/test), stripe |
| MPPO_HOLD_WINDOW_SANDBOX_SECONDS | how long a sandbox hold lasts | 7 days |
| MPPO_HOLD_WINDOW_STRIPE_SECONDS | how long a Stripe card hold lasts (capture_before) | 7 days |
| MPPO_HOLD_WINDOW_RAZORPAY_SECONDS | how long a Razorpay authorization lasts | 3 days |
| MPPO_HOLD_WINDOW_PAYPAL_SECONDS | PayPal honors a hold (valid 29 days) | 3 days |

Without MPPO_PAYMENT_PROVIDERS a provider counts as configured when its keys are set
(MPPO_STRIPE_API_KEY, MPPO_RAZORPAY_KEY_ID, MPPO_PAYPAL_CLIENT_ID), the sandbox in dev/test or
with MPPO_SANDBOX_ENABLED=1. Stripe's window is the default for card payments a customer
starts online; some merchant-initiated captures lapse after about 4 days — set the Stripe
window to 4 days for those. Each held payment also carries the provider's own lapse time
(Stripe's ``capture_before``) when the provider reports one; the window is used when it does
not.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from mppo.platform.config import ConfigError
from mppo.platform.environment import is_development
from mppo.platform.settings import Env

PROVIDERS = ("sandbox", "stripe", "razorpay", "paypal")

DAY = 86400.0
#: how long each provider holds an authorization, by default
DEFAULT_HOLD_WINDOWS: Mapping[str, timedelta] = {
    "sandbox": timedelta(days=7),
    "stripe": timedelta(days=7),
    "razorpay": timedelta(days=3),
    "paypal": timedelta(days=3),
}


def _keyed(env: Env, values: Mapping[str, str]) -> tuple[str, ...]:
    development = is_development(values)
    keyed = {
        "sandbox": development or env.switch("MPPO_SANDBOX_ENABLED", False),
        "stripe": bool(env.text("MPPO_STRIPE_API_KEY")),
        "razorpay": bool(env.text("MPPO_RAZORPAY_KEY_ID")),
        "paypal": bool(env.text("MPPO_PAYPAL_CLIENT_ID")),
    }
    return tuple(name for name in PROVIDERS if keyed[name])


@dataclass(frozen=True)
class ProviderChoice:
    """The providers on offer, the default one and every provider's hold window."""

    configured: tuple[str, ...]
    default: str
    hold_windows: Mapping[str, timedelta] = field(
        default_factory=lambda: dict(DEFAULT_HOLD_WINDOWS)
    )

    @classmethod
    def from_env(cls, source: Mapping[str, str] | None = None) -> ProviderChoice:
        """Read the variables above; a malformed one stops the process (ConfigError)."""
        values = os.environ if source is None else source
        env = Env(values)
        listed = [p.strip().lower() for p in env.text("MPPO_PAYMENT_PROVIDERS").split(",")]
        listed = [p for p in listed if p]
        unknown = [p for p in listed if p not in PROVIDERS]
        if unknown:
            raise ConfigError(
                f"MPPO_PAYMENT_PROVIDERS names unknown providers {unknown}; known: {PROVIDERS}"
            )
        configured = tuple(dict.fromkeys(listed)) or _keyed(env, values)
        fallback = "sandbox" if is_development(values) else "stripe"
        default = env.choice("MPPO_PAYMENT_DEFAULT_PROVIDER", PROVIDERS, fallback)
        if default not in configured:
            configured = (default, *configured)
        windows = {
            name: timedelta(
                seconds=env.number(
                    f"MPPO_HOLD_WINDOW_{name.upper()}_SECONDS",
                    DEFAULT_HOLD_WINDOWS[name].total_seconds(),
                    minimum=1.0,
                )
            )
            for name in PROVIDERS
        }
        return cls(configured=configured, default=default, hold_windows=windows)

    def resolve(self, provider: str) -> str:
        """The provider a member pays with: theirs, or the default when they named none."""
        return provider or self.default

    def is_configured(self, provider: str) -> bool:
        """Whether a member may choose `provider` ("" — the default — always)."""
        return not provider or provider in self.configured

    def window(self, provider: str) -> timedelta:
        """How long `provider` (or the default one) holds an authorization."""
        return self.hold_windows.get(self.resolve(provider), DEFAULT_HOLD_WINDOWS["stripe"])

    def shortest_window(self, providers: Iterable[str]) -> tuple[str, timedelta]:
        """The provider in play whose holds lapse first, and its window."""
        names = sorted({self.resolve(p) for p in providers} or {self.default})
        name = min(names, key=self.window)
        return name, self.window(name)
