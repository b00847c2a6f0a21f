"""The gateway's settings, read from the environment once at start (failing fast).

| variable | meaning | default |
| --- | --- | --- |
| `MPPO_GATEWAY_ADDR` | where the gateway listens | `127.0.0.1:8080` |
| `MPPO_GROUP_ADDR`, `_PAYMENT_`, `_ORDER_`, `_NOTIFICATION_` | upstream gRPC services | 50051-4 |
| `MPPO_REDIS_URL` | Redis for rate limiting | required |
| `MPPO_JWT_JWKS` | JWKS file or URL; `dev`: the `mppo token` keys in the state dir | required |
| `MPPO_JWT_ISSUER`, `MPPO_JWT_AUDIENCE` | accepted `iss` / `aud` | required (not with `dev`) |
| `MPPO_GATEWAY_RATE_LIMIT` | per caller (JWT subject), `RATE/BURST` per second | `20/40` |
| `MPPO_GATEWAY_IP_RATE_LIMIT` | per client IP, `RATE/BURST` | `100/200` |
| `MPPO_GATEWAY_RATE_PREFIX` | Redis key prefix of the buckets | `mppo:gw:rl:` |
| `MPPO_GATEWAY_CORS_ORIGINS` | comma-separated browser origins allowed (`*` for any) | none |
| `MPPO_GATEWAY_MAX_BODY` | largest request body in bytes (413 above) | `1048576` (1 MiB) |
| `MPPO_GATEWAY_DESCRIPTORS` | descriptor set to serve | `gateway/descriptors.binpb` |
| `MPPO_GATEWAY_UPSTREAM_TIMEOUT` | seconds per upstream call | `15` |
| `MPPO_ENV` | `dev`, `test` or `prod`: picks the defaults below | `prod` |
| `MPPO_RATELIMIT_FAILURE_MODE` | Redis down: `closed` (503) or `open` (let through) | `closed`¹ |
| `MPPO_GATEWAY_REDIS_POOL_SIZE` | Redis connections of the rate limiter | `256` |
| `MPPO_GATEWAY_REDIS_POOL_WAIT` | seconds a check waits for a free connection before 503 | `0.5` |
| `MPPO_GATEWAY_TRUSTED_PROXIES` | CIDRs of the proxies in front (Envoy)² | none |

¹ `open` when `MPPO_ENV` is `dev` or `test`.
² comma-separated; a request from one of them is metered per IP by the client address the
proxy appended to `X-Forwarded-For`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path

from gateway.descriptors import DEFAULT_DESCRIPTORS
from gateway.devkeys import DEV_AUDIENCE, DEV_ISSUER, dev_keys
from gateway.ratelimit import FailureMode, Limit
from mppo.platform.config import ConfigError, listen_addr, require, service_addr
from mppo.platform.environment import environment, is_development
from mppo.platform.trust import Trust
from mppo.platform.user_token import UserTokenSigner, load_signer

UPSTREAMS = ("group", "payment", "order", "notification")
MAX_BODY_DEFAULT = 1 << 20


def _state_dir(env: Mapping[str, str]) -> Path:
    from mppo.devstack.stack import default_state_dir

    value = env.get("MPPO_STATE_DIR", "").strip()
    return Path(value).resolve() if value else default_state_dir()


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway process needs."""

    host: str
    port: int
    upstreams: Mapping[str, str]
    redis_url: str
    jwks: str
    issuer: str
    audience: str
    caller_limit: Limit
    ip_limit: Limit
    rate_prefix: str
    cors_origins: frozenset[str]
    max_body: int
    descriptors: Path
    upstream_timeout: float
    log_level: str
    environment: str = "prod"
    failure_mode: FailureMode = FailureMode.CLOSED
    redis_pool_size: int = 256
    redis_pool_wait: float = 0.5
    #: how the gateway proves itself to the services (mTLS) — plaintext only in explicit dev
    trust: Trust | None = None
    #: signs the user tokens the services accept (required with mutual TLS)
    signer: UserTokenSigner | None = None
    #: addresses of the proxies in front (Envoy before the group page): a request from one
    #: of them is metered by the client address it appended to X-Forwarded-For
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewayConfig:
        """Read and check every setting."""
        source = os.environ if env is None else env
        host, _, port = listen_addr(source, "gateway").rpartition(":")
        jwks = require(source, "MPPO_JWT_JWKS")
        if jwks == "dev" and not is_development(source):
            raise ConfigError(
                "MPPO_JWT_JWKS=dev (the development keys) is refused when "
                f"MPPO_ENV={environment(source)}; name the identity provider's JWKS"
            )
        if jwks == "dev":
            jwks = str(dev_keys(_state_dir(source)).jwks_path)
            issuer = source.get("MPPO_JWT_ISSUER", "").strip() or DEV_ISSUER
            audience = source.get("MPPO_JWT_AUDIENCE", "").strip() or DEV_AUDIENCE
        else:
            issuer = require(source, "MPPO_JWT_ISSUER")
            audience = require(source, "MPPO_JWT_AUDIENCE")
        try:
            caller_limit = Limit.parse(source.get("MPPO_GATEWAY_RATE_LIMIT", "20/40"))
            ip_limit = Limit.parse(source.get("MPPO_GATEWAY_IP_RATE_LIMIT", "100/200"))
            max_body = int(source.get("MPPO_GATEWAY_MAX_BODY", str(MAX_BODY_DEFAULT)))
            timeout = float(source.get("MPPO_GATEWAY_UPSTREAM_TIMEOUT", "15"))
            env_name = environment(source)
            mode = source.get("MPPO_RATELIMIT_FAILURE_MODE", "").strip()
            if mode:
                failure_mode = FailureMode.parse(mode)
            elif is_development(source):
                failure_mode = FailureMode.OPEN
            else:
                failure_mode = FailureMode.CLOSED
            pool_size = int(source.get("MPPO_GATEWAY_REDIS_POOL_SIZE", "256"))
            pool_wait = float(source.get("MPPO_GATEWAY_REDIS_POOL_WAIT", "0.5"))
            if pool_size < 1 or not 0 <= pool_wait <= 60:
                raise ValueError(
                    "MPPO_GATEWAY_REDIS_POOL_SIZE must be at least 1 and "
                    "MPPO_GATEWAY_REDIS_POOL_WAIT 0 to 60 seconds"
                )
        except ValueError as exc:
            raise ConfigError(f"bad gateway setting: {exc}") from None
        trust = Trust.from_env(source, "gateway", serving=False)
        try:
            signer = load_signer(source)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if trust.material is not None and signer is None:
            raise ConfigError(
                "MPPO_USER_TOKEN_PRIVATE_KEY_FILE is required with mutual TLS (the services "
                "accept end users only through tokens the gateway signs)"
            )
        try:
            proxies = tuple(
                ip_network(item.strip(), strict=False)
                for item in source.get("MPPO_GATEWAY_TRUSTED_PROXIES", "").split(",")
                if item.strip()
            )
        except ValueError as exc:
            raise ConfigError(f"bad MPPO_GATEWAY_TRUSTED_PROXIES: {exc}") from None
        origins = source.get("MPPO_GATEWAY_CORS_ORIGINS", "")
        descriptors = source.get("MPPO_GATEWAY_DESCRIPTORS", "").strip()
        return cls(
            host=host,
            port=int(port),
            upstreams={name: service_addr(source, name) for name in UPSTREAMS},
            redis_url=require(source, "MPPO_REDIS_URL"),
            jwks=jwks,
            issuer=issuer,
            audience=audience,
            caller_limit=caller_limit,
            ip_limit=ip_limit,
            rate_prefix=source.get("MPPO_GATEWAY_RATE_PREFIX", "mppo:gw:rl:"),
            cors_origins=frozenset(o.strip() for o in origins.split(",") if o.strip()),
            max_body=max_body,
            descriptors=Path(descriptors) if descriptors else DEFAULT_DESCRIPTORS,
            upstream_timeout=timeout,
            log_level=source.get("MPPO_LOG_LEVEL", "INFO").upper(),
            environment=env_name,
            failure_mode=failure_mode,
            redis_pool_size=pool_size,
            redis_pool_wait=pool_wait,
            trust=trust,
            signer=signer,
            trusted_proxies=proxies,
        )
