"""How our services dial each other: one channel per peer, mutual TLS, traced, one retry rule.

Every client of one of our services is built on :class:`ServiceChannel`: it owns the channel
(created lazily, closed once; our certificate proves who we are, see :mod:`mppo.platform.trust`),
the identity metadata the caller sends (a user's token when acting for them), the deadline, and the
translation of a peer's status into the domain error it describes
(:func:`mppo.platform.rpc_status.from_rpc_error`). Whether a failure may be retried is decided
in one place, :func:`mppo.platform.rpc_status.is_retryable`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc

from mppo.platform import telemetry, trust
from mppo.platform.errors import DomainError
from mppo.platform.identity import Caller
from mppo.platform.rpc_status import from_rpc_error

logger = logging.getLogger(__name__)

T = TypeVar("T")
Metadata = Sequence[tuple[str, str]]


class ServiceChannel:
    """A lazily opened channel to one peer service, used by that service's client."""

    def __init__(self, addr: str, caller: str, *, timeout: float = 10.0) -> None:
        self.addr = addr
        self.caller = caller
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None

    @property
    def channel(self) -> grpc.aio.Channel:
        """The channel (opened on first use, inside the running event loop)."""
        if self._channel is None:
            self._channel = trust.channel(self.addr)
        return self._channel

    def metadata(
        self, *extra: tuple[str, str], on_behalf_of: Caller | None = None
    ) -> tuple[tuple[str, str], ...]:
        """Our identity (and the user's token when acting for `on_behalf_of`), the current
        trace, plus `extra`."""
        return (*trust.outbound_metadata(on_behalf_of), *telemetry.trace_metadata(), *extra)

    async def call(self, what: str, rpc: Callable[[], Awaitable[T]]) -> T:
        """Run one RPC; a failure becomes the domain error the peer described."""
        try:
            return await rpc()
        except grpc.aio.AioRpcError as exc:
            error: DomainError = from_rpc_error(exc)
            logger.warning("%s → %s failed: %s %s", self.caller, what, exc.code().name, error)
            raise error from exc

    async def close(self) -> None:
        """Close the channel (safe to call twice)."""
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close(None)
