"""Gateway settings from the environment, and `mppo token` minting a dev token the dev
configuration accepts."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest

from gateway.auth import JwksSource, JwtVerifier
from gateway.config import GatewayConfig
from gateway.ratelimit import FailureMode
from mppo.cli import main
from mppo.devstack.services import DEFAULT_SERVICES
from mppo.platform.config import ConfigError
from tests.support.pki import mint_pki

#: a production gateway needs mutual TLS and a user-token key: a PKI for every config here
_TLS = mint_pki(Path(tempfile.mkdtemp(prefix="gw-config-pki-"))).env()


def _config(env: dict[str, str]) -> GatewayConfig:
    """GatewayConfig.from_env with the test PKI unless the env names its own TLS setting."""
    return GatewayConfig.from_env(_TLS | env)


def test_config_requires_jwks_and_redis() -> None:
    with pytest.raises(ConfigError, match="MPPO_JWT_JWKS"):
        _config({"MPPO_REDIS_URL": "redis://x"})
    with pytest.raises(ConfigError, match="MPPO_JWT_ISSUER"):
        _config({"MPPO_REDIS_URL": "redis://x", "MPPO_JWT_JWKS": "/k.json"})


def test_config_reads_everything(tmp_path: Path) -> None:
    config = _config(
        {
            "MPPO_REDIS_URL": "redis://r:6379",
            "MPPO_JWT_JWKS": "https://idp/jwks.json",
            "MPPO_JWT_ISSUER": "https://idp/",
            "MPPO_JWT_AUDIENCE": "api",
            "MPPO_GATEWAY_ADDR": "0.0.0.0:9000",
            "MPPO_PAYMENT_ADDR": "payment:50052",
            "MPPO_GATEWAY_RATE_LIMIT": "5/10",
            "MPPO_GATEWAY_CORS_ORIGINS": "https://a.example, https://b.example",
        }
    )
    assert (config.host, config.port) == ("0.0.0.0", 9000)
    assert config.upstreams["payment"] == "payment:50052"
    assert config.upstreams["group"] == "127.0.0.1:50051"
    assert (config.caller_limit.rate, config.caller_limit.burst) == (5.0, 10)
    assert config.cors_origins == {"https://a.example", "https://b.example"}
    assert config.max_body == 1 << 20


BASE = {
    "MPPO_REDIS_URL": "redis://r",
    "MPPO_JWT_JWKS": "/k.json",
    "MPPO_JWT_ISSUER": "https://idp/",
    "MPPO_JWT_AUDIENCE": "api",
}


@pytest.mark.parametrize(
    ("env", "mode"),
    [
        ({}, FailureMode.CLOSED),  # MPPO_ENV defaults to prod
        ({"MPPO_ENV": "prod"}, FailureMode.CLOSED),
        ({"MPPO_ENV": "dev"}, FailureMode.OPEN),
        ({"MPPO_ENV": "test"}, FailureMode.OPEN),
        ({"MPPO_ENV": "prod", "MPPO_RATELIMIT_FAILURE_MODE": "open"}, FailureMode.OPEN),
        ({"MPPO_ENV": "dev", "MPPO_RATELIMIT_FAILURE_MODE": "CLOSED"}, FailureMode.CLOSED),
    ],
)
def test_rate_limiter_fails_closed_unless_dev_or_told_otherwise(
    env: dict[str, str], mode: FailureMode
) -> None:
    assert _config(BASE | env).failure_mode is mode


def test_redis_pool_is_sized_for_concurrency_and_configurable() -> None:
    config = _config(BASE)
    assert (config.redis_pool_size, config.redis_pool_wait) == (256, 0.5)
    config = _config(
        BASE | {"MPPO_GATEWAY_REDIS_POOL_SIZE": "1000", "MPPO_GATEWAY_REDIS_POOL_WAIT": "2"}
    )
    assert (config.redis_pool_size, config.redis_pool_wait) == (1000, 2.0)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MPPO_ENV": "staging"}, "MPPO_ENV"),
        ({"MPPO_RATELIMIT_FAILURE_MODE": "sometimes"}, "failure mode"),
        ({"MPPO_GATEWAY_REDIS_POOL_SIZE": "0"}, "MPPO_GATEWAY_REDIS_POOL_SIZE"),
        ({"MPPO_GATEWAY_REDIS_POOL_WAIT": "-1"}, "MPPO_GATEWAY_REDIS_POOL_WAIT"),
        ({"MPPO_GATEWAY_REDIS_POOL_SIZE": "many"}, "many"),
    ],
)
def test_bad_limiter_settings_refuse_to_start(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        _config(BASE | env)


async def test_mppo_token_is_accepted_by_the_dev_configuration(tmp_path: Path) -> None:
    out = io.StringIO()
    assert main(["token", "--sub", "dana", "--ttl", "120", "--state-dir", str(tmp_path)], out) == 0
    token = out.getvalue().strip()
    dev = {"MPPO_REDIS_URL": "redis://x", "MPPO_JWT_JWKS": "dev", "MPPO_STATE_DIR": str(tmp_path)}
    with pytest.raises(ConfigError, match="MPPO_JWT_JWKS=dev"):
        _config(dev)  # MPPO_ENV unset is prod: the development keys are refused
    config = _config(dev | {"MPPO_ENV": "dev"})
    assert Path(config.jwks) == tmp_path / "jwt" / "jwks.json"
    verifier = JwtVerifier(JwksSource(config.jwks), config.issuer, config.audience)
    identity = await verifier.verify(f"Bearer {token}")
    assert identity.user_id == "dana"
    assert identity.claims["exp"] - identity.claims["iat"] == 120


def test_dev_up_runs_the_gateway_with_dev_keys() -> None:
    (gateway,) = [s for s in DEFAULT_SERVICES if s.name == "gateway"]
    assert gateway.port == 8080
    assert gateway.readiness == "http"
    assert gateway.health_path == "/healthz"
    assert gateway.env["MPPO_JWT_JWKS"] == "dev"
    assert gateway.argv()[1:] == ["-m", "gateway"]


def test_behind_envoy_the_per_ip_limit_meters_the_address_envoy_saw() -> None:
    """The group page runs behind Envoy: from a trusted proxy, the client is the last
    X-Forwarded-For hop that is not a proxy; what the client wrote itself is not believed."""
    from ipaddress import ip_network

    from gateway.app import client_address

    proxies = (ip_network("10.0.0.0/8"),)
    # Envoy (10.1.2.3) appended the address it saw; a client's own entry before it is ignored
    assert client_address("10.1.2.3", ["6.6.6.6, 203.0.113.9"], proxies) == "203.0.113.9"
    assert client_address("10.1.2.3", ["203.0.113.9", "10.9.9.9"], proxies) == "203.0.113.9"
    # not from a proxy: the header is the client's own say, not believed
    assert client_address("198.51.100.7", ["203.0.113.9"], proxies) == "198.51.100.7"
    # no proxies configured, no header, or garbage: the peer
    assert client_address("10.1.2.3", ["203.0.113.9"], ()) == "10.1.2.3"
    assert client_address("10.1.2.3", [], proxies) == "10.1.2.3"
    assert client_address("10.1.2.3", ["not-an-ip"], proxies) == "10.1.2.3"
    env = {
        "MPPO_ENV": "dev",
        "MPPO_JWT_JWKS": "dev",
        "MPPO_REDIS_URL": "redis://localhost:6379/0",
        "MPPO_GRPC_PLAINTEXT": "1",
        "MPPO_GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8, 172.16.0.0/12",
    }
    from gateway.config import GatewayConfig

    config = GatewayConfig.from_env(env)
    assert [str(n) for n in config.trusted_proxies] == ["10.0.0.0/8", "172.16.0.0/12"]
