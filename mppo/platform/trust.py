"""Who a call comes from, proven: mutual TLS between processes, verified end-user credentials.

A process's :class:`Trust` is read once at start (:meth:`Trust.from_env`):

* with TLS material (``MPPO_TLS_DIR`` or ``MPPO_TLS_{CA,CERT,KEY}_FILE``, see
  :mod:`mppo.platform.tls`) the server requires client certificates and the calling
  service's name is taken from its verified certificate (``spiffe://mppo/<name>``), never
  from metadata. An end user is known only through one of two credentials:

  - ``x-mppo-user-token``: a short-lived token the Python gateway signs after verifying the
    user's JWT (:mod:`mppo.platform.user_token`), checked with the gateway's public key; any
    of our services may forward it when acting for the user;
  - ``x-mppo-user-jwt``: the identity provider's JWT itself, which Envoy (the production
    edge, unable to sign our token) verified and forwards raw; believed only from the
    ``gateway`` certificate (any other: PERMISSION_DENIED) and verified again with the same
    rules as the gateway (:mod:`mppo.platform.idp_jwt`: ``MPPO_JWT_JWKS``,
    ``MPPO_JWT_ISSUER``, ``MPPO_JWT_AUDIENCE``; optional, a service without them accepts no
    JWT). A user known this way cannot be vouched for to another service.

  Metadata that claims an identity (``x-mppo-service`` other than the certificate's,
  ``x-mppo-user-id`` without a valid credential or naming another user) is refused.
* without TLS material the process refuses to start, unless ``MPPO_ENV`` is dev/test and
  ``MPPO_GRPC_PLAINTEXT=1`` asks explicitly for plaintext, where identities are read from
  metadata as a development convenience.

:func:`authenticate` runs for every call of our services (the runtime awaits it before the
handler) and sets the verified :class:`~mppo.platform.identity.Caller` that
:func:`~mppo.platform.identity.caller_from` returns. :func:`channel` dials a peer with our
certificate; :func:`outbound_metadata` says who we are and, when acting for a user, forwards
the user's token.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from mppo.platform import identity
from mppo.platform.config import ConfigError
from mppo.platform.environment import environment, is_development
from mppo.platform.errors import PermissionDeniedError, UnauthenticatedError
from mppo.platform.identity import SERVICE_KEY, USER_ID_KEY, USER_JWT_KEY, Caller
from mppo.platform.idp_jwt import AuthError, JwtVerifier, bearer_token, load_jwt_verifier
from mppo.platform.targets import channel_options, grpc_target
from mppo.platform.telemetry import client_interceptors
from mppo.platform.tls import (
    TlsConfigError,
    TlsMaterial,
    channel_credentials,
    peer_service,
    server_credentials,
)
from mppo.platform.user_token import (
    USER_TOKEN_KEY,
    UserTokenError,
    UserTokenVerifier,
    load_verifier,
)
from mppo.platform.validation import rule_for, string_problem

PLAINTEXT_VAR = "MPPO_GRPC_PLAINTEXT"
#: the only certificate a forwarded IdP JWT is believed from (Envoy, or the Python gateway)
GATEWAY = "gateway"
#: who may present a forwarded IdP JWT: the edge that verified it, and our services passing
#: the user's own credential on when they ask another service on the user's behalf
JWT_FORWARDERS = frozenset({GATEWAY, "group", "payment", "order", "notification", "worker"})
#: the operator's certificate (grpcurl); never allowed on service-only methods
OPERATOR = "operator"
_USER_ID_RULE = rule_for("user_id")


@dataclass(frozen=True)
class Trust:
    """How this process proves itself and checks its callers."""

    name: str
    material: TlsMaterial | None
    verifier: UserTokenVerifier | None
    #: verifies the IdP JWT the edge forwards (None: this process accepts none)
    user_jwt: JwtVerifier | None = None

    @property
    def plaintext(self) -> bool:
        """Development only: no TLS, identities read from metadata."""
        return self.material is None

    @classmethod
    def from_env(cls, env: Mapping[str, str], name: str, *, serving: bool = True) -> Trust:
        """Read the trust settings of process `name`; ConfigError names what is missing.

        A process that serves no gRPC (`serving=False`, the gateway) needs no token verifier
        and accepts no forwarded JWT.
        """
        try:
            material = TlsMaterial.from_env(env, name)
            verifier = load_verifier(env) if serving else None
        except (TlsConfigError, ValueError) as exc:
            raise ConfigError(f"TLS settings: {exc}") from None
        try:
            user_jwt = load_jwt_verifier(env) if serving and material is not None else None
        except ValueError as exc:
            raise ConfigError(f"JWT settings: {exc}") from None
        if material is None:
            plaintext = env.get(PLAINTEXT_VAR, "").strip().lower() in ("1", "true", "on", "yes")
            if not (plaintext and is_development(env)):
                raise ConfigError(
                    "mutual TLS is required: set MPPO_TLS_DIR or MPPO_TLS_CA_FILE, "
                    "MPPO_TLS_CERT_FILE and MPPO_TLS_KEY_FILE"
                    + (
                        f" (plaintext gRPC needs MPPO_ENV=dev|test and {PLAINTEXT_VAR}=1; "
                        f"MPPO_ENV={environment(env)})"
                    )
                )
            return cls(name=name, material=None, verifier=None)
        if verifier is None and serving:
            raise ConfigError(
                "the gateway's user-token public key is required with TLS: set "
                "MPPO_USER_TOKEN_PUBLIC_KEY_FILE (or put user-token.pub in MPPO_TLS_DIR)"
            )
        return cls(name=name, material=material, verifier=verifier, user_jwt=user_jwt)

    def add_port(self, server: grpc.aio.Server, addr: str) -> int:
        """Listen on `addr` with mutual TLS (plaintext only in explicit development mode)."""
        if self.material is None:
            return server.add_insecure_port(addr)
        return server.add_secure_port(addr, server_credentials(self.material))


_trust: Trust | None = None


def configure(trust: Trust) -> None:
    """Set this process's trust settings (once, at start)."""
    global _trust
    _trust = trust


def current() -> Trust:
    """This process's trust settings; read from the environment on first use if not set."""
    global _trust
    if _trust is None:
        name = os.environ.get("MPPO_PROCESS_NAME", "").strip() or "tests"
        _trust = Trust.from_env(os.environ, name)
    return _trust


def _value(metadata: Any, name: str) -> str:
    for key, value in metadata or ():
        if key.lower() == name and isinstance(value, str):
            return value.strip()
    return ""


async def authenticate(
    context: grpc.aio.ServicerContext[Any, Any],
    method: str,
    allowed: frozenset[str] | None,
    trust: Trust,
) -> Caller:
    """The verified caller of one call to `method` (``/pkg.Service/Method``).

    `allowed` names the services that may call a service-only method (None: any of our
    processes, and end users through the gateway). Raises UnauthenticatedError when the
    caller proves nothing, PermissionDeniedError when it may not call `method` or presents a
    credential it may not present. Awaits only to verify a forwarded JWT (JWKS fetch, cached).
    """
    metadata = context.invocation_metadata()
    if trust.plaintext:
        caller = identity.caller_from_metadata(metadata)
    else:
        caller = await _verified_caller(context, metadata, trust)
    if allowed is not None and (caller.user_id or caller.service not in allowed):
        who = f"user {caller.user_id}" if caller.user_id else caller.service
        raise PermissionDeniedError(
            f"{who} may not call {method.rsplit('/', 1)[-1]} (service-only: "
            f"{', '.join(sorted(allowed))})",
            "CALLER_NOT_ALLOWED",
        )
    return caller


async def _verified_caller(
    context: grpc.aio.ServicerContext[Any, Any], metadata: Any, trust: Trust
) -> Caller:
    service = peer_service(context)
    if service is None:
        raise UnauthenticatedError("a client certificate signed by our CA is required")
    claimed = _value(metadata, SERVICE_KEY)
    if claimed and claimed != service:
        raise PermissionDeniedError(
            f"x-mppo-service {claimed[:40]!r} does not match the certificate ({service})",
            "IDENTITY_MISMATCH",
        )
    token = _value(metadata, USER_TOKEN_KEY)
    user_jwt = _value(metadata, USER_JWT_KEY)
    claimed_user = _value(metadata, USER_ID_KEY)
    if token and user_jwt:
        raise UnauthenticatedError(
            f"send one user credential: {USER_TOKEN_KEY} or {USER_JWT_KEY}, not both"
        )
    if user_jwt:
        caller = Caller(user_id=await _jwt_user(user_jwt, service, trust), jwt=user_jwt)
    elif token:
        assert trust.verifier is not None
        try:
            user_id = trust.verifier.verify(token)
        except UserTokenError as exc:
            raise UnauthenticatedError(f"user token refused: {exc}") from None
        caller = Caller(user_id=user_id, token=token)
    elif claimed_user:
        raise UnauthenticatedError("an end user is known only by a verified token")
    else:
        return Caller(service=service)
    if claimed_user and claimed_user != caller.user_id:
        raise PermissionDeniedError(
            f"{USER_ID_KEY} does not match the verified user", "IDENTITY_MISMATCH"
        )
    return caller


async def _jwt_user(value: str, service: str, trust: Trust) -> str:
    """The user a forwarded IdP JWT proves; only the gateway's certificate, or one of our
    services passing the user's credential on, may present one."""
    if service not in JWT_FORWARDERS:
        raise PermissionDeniedError(
            f"{USER_JWT_KEY} is accepted only from the gateway or our services passing it on,"
            f" not from {service}",
            "JWT_NOT_FROM_GATEWAY",
        )
    if trust.user_jwt is None:
        raise UnauthenticatedError(
            f"this service accepts no {USER_JWT_KEY} (MPPO_JWT_JWKS is not set)"
        )
    try:
        verified = await trust.user_jwt.verify_token(bearer_token(value))
    except AuthError as exc:
        raise UnauthenticatedError(f"user JWT refused: {exc}") from None
    problem = string_problem(verified.user_id, _USER_ID_RULE)
    if problem:  # the same rule the gateway applies before a subject becomes an id
        raise UnauthenticatedError(f"user JWT subject {problem}")
    return verified.user_id


def outbound_metadata(on_behalf_of: Caller | None = None) -> tuple[tuple[str, str], ...]:
    """Identity metadata for a call to a peer: ours, and the user's token when acting for one."""
    trust = current()
    if on_behalf_of is None or not on_behalf_of.user_id:
        return ((SERVICE_KEY, trust.name),)
    if trust.plaintext:
        return ((USER_ID_KEY, on_behalf_of.user_id),)
    if on_behalf_of.token:
        return ((USER_TOKEN_KEY, on_behalf_of.token),)
    if on_behalf_of.jwt:  # the identity provider's JWT the edge verified, passed on unchanged
        return ((USER_JWT_KEY, on_behalf_of.jwt),)
    raise UnauthenticatedError("no verified user credential to act on the user's behalf")


def channel(target: str, options: list[tuple[str, Any]] | None = None) -> grpc.aio.Channel:
    """A channel to a peer at `target` (``host:port``, a list of replicas or a ``dns:///``
    name, mppo.platform.targets), balanced round robin over its addresses: mutual TLS with
    our certificate (plaintext only in explicit dev mode), carrying the trace context."""
    trust = current()
    interceptors: Any = client_interceptors() or None  # exporting traces only
    address, options = grpc_target(target), channel_options(target, options)
    if trust.material is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(
        address, channel_credentials(trust.material), options=options, interceptors=interceptors
    )
