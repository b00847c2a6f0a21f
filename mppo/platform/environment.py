"""The one environment switch: ``MPPO_ENV=dev|test|prod`` (default ``prod``).

Anything not started by ``mppo dev up`` or the tests runs as ``prod``. Outside ``dev``/``test``
no development default may exist at all: a setting whose development value is published (the
sandbox's webhook secret, the dev PII key, the sandbox merchant's secret, the dev JWT keys)
must be set, to something else, or the process refuses to start with a message naming the
variable (:func:`secret`). Development-only components (the sandbox payment provider,
plaintext gRPC) are off unless :func:`is_development` — or, for the sandbox, explicitly
enabled with its own non-default secret.
"""

from __future__ import annotations

from collections.abc import Mapping

from mppo.platform.config import ConfigError

ENV_VAR = "MPPO_ENV"
ENVIRONMENTS = ("dev", "test", "prod")


def environment(env: Mapping[str, str]) -> str:
    """`MPPO_ENV`: dev, test or prod (the default); ConfigError for anything else."""
    value = env.get(ENV_VAR, "").strip().lower() or "prod"
    if value not in ENVIRONMENTS:
        raise ConfigError(f"{ENV_VAR}={value!r} must be one of {', '.join(ENVIRONMENTS)}")
    return value


def is_development(env: Mapping[str, str]) -> bool:
    """Whether development defaults may be used (MPPO_ENV is dev or test)."""
    return environment(env) in ("dev", "test")


def secret(env: Mapping[str, str], name: str, dev_default: str) -> str:
    """The value of secret `name`; its published development default only in dev/test.

    In prod, an unset secret or one equal to the development default refuses to start.
    """
    value = env.get(name, "").strip()
    if is_development(env):
        return value or dev_default
    if not value:
        raise ConfigError(f"{name} must be set when {ENV_VAR}={environment(env)}")
    if value == dev_default:
        raise ConfigError(
            f"{name} is the published development default; set a real secret "
            f"(refused because {ENV_VAR}={environment(env)})"
        )
    return value
