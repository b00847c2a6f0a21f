"""Configuration of the payment service, read from the environment once at start."""

from __future__ import annotations

from mppo.platform.config import ServiceConfig


def load_config() -> ServiceConfig:
    """The payment service's settings (docs/conventions.md lists the variables)."""
    return ServiceConfig.from_env("payment")
