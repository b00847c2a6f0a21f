"""A development PKI for tests (mTLS certificates and the gateway's user-token keys).

The session fixture ``pki`` (tests/conftest.py) mints one into a temporary directory with
:func:`mint_pki`: the identities of ``mppo dev up`` plus ``tests`` (a test acting as a peer
service). Pass ``pki.env()`` to a process to give it ``MPPO_TLS_DIR``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from mppo.platform.tls import (
    DEV_NAMES,
    ENV_TLS_DIR,
    TlsMaterial,
    channel_credentials,
    mint_dev_pki,
    server_credentials,
)
from mppo.platform.user_token import (
    USER_TOKEN_KEY,
    UserTokenSigner,
    UserTokenVerifier,
    load_signer,
    load_verifier,
)

TEST_NAMES: tuple[str, ...] = (*DEV_NAMES, "tests")


@dataclass(frozen=True)
class Pki:
    """A minted PKI: its directory and shortcuts to what tests need from it."""

    directory: Path

    def env(self) -> dict[str, str]:
        """The environment that points a process at this PKI."""
        return {ENV_TLS_DIR: str(self.directory)}

    def material(self, name: str) -> TlsMaterial:
        return TlsMaterial.load(self.directory, name)

    def server_credentials(self, name: str) -> grpc.ServerCredentials:
        return server_credentials(self.material(name))

    def channel_credentials(self, name: str = "tests") -> grpc.ChannelCredentials:
        return channel_credentials(self.material(name))

    def signer(self, ttl: float = 60.0) -> UserTokenSigner:
        signer = load_signer(self.env(), ttl)
        assert signer is not None
        return signer

    def verifier(self) -> UserTokenVerifier:
        verifier = load_verifier(self.env())
        assert verifier is not None
        return verifier

    def user_metadata(self, user_id: str) -> tuple[tuple[str, str], ...]:
        """gRPC metadata carrying a fresh user token for ``user_id``, as the gateway sends."""
        return ((USER_TOKEN_KEY, self.signer().sign(user_id)),)


def mint_pki(directory: Path, names: Sequence[str] = TEST_NAMES) -> Pki:
    """Mint (or complete) a development PKI in ``directory``."""
    mint_dev_pki(directory, names)
    return Pki(directory)
