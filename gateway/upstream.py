"""Generic unary gRPC calls to the upstream services: one channel per service, mutual TLS.

The gateway presents its certificate (``spiffe://mppo/gateway``); the services know it by
that, never by metadata. Plaintext only when the process's `Trust` is the explicit
development mode.

No generated stubs: each call uses the method's HTTP/2 path and the dynamic message classes
of the descriptor set (`channel.unary_unary(path, serializer, deserializer)`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc
from google.protobuf.message import Message

from gateway.descriptors import Catalog, HttpBinding
from mppo.platform.targets import channel_options, grpc_target
from mppo.platform.telemetry import client_interceptors
from mppo.platform.tls import channel_credentials
from mppo.platform.trust import Trust


class Upstreams:
    """gRPC channels keyed by area (`group`, `payment`, ...)."""

    def __init__(
        self,
        catalog: Catalog,
        addrs: Mapping[str, str],
        timeout: float,
        trust: Trust | None = None,
    ) -> None:
        self.catalog = catalog
        self._trust = trust
        self.timeout = timeout
        self._addrs = dict(addrs)
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _channel(self, area: str) -> grpc.aio.Channel:
        channel = self._channels.get(area)
        if channel is None:
            addr = self._addrs.get(area)
            if addr is None:
                raise LookupError(f"no upstream address for service area {area!r}")
            material = self._trust.material if self._trust is not None else None
            # round robin over every replica the address names (mppo.platform.targets)
            target, options = grpc_target(addr), channel_options(addr)
            interceptors = client_interceptors()  # exporting traces only
            if material is None:
                channel = grpc.aio.insecure_channel(
                    target, options=options, interceptors=interceptors
                )
            else:
                channel = grpc.aio.secure_channel(
                    target,
                    channel_credentials(material),
                    options=options,
                    interceptors=interceptors,
                )
            self._channels[area] = channel
        return channel

    def _rpc(self, binding: HttpBinding) -> grpc.aio.UnaryUnaryMultiCallable[Message, Message]:
        """The binding's RPC on its service's channel, answering its output message."""
        response_class = self.catalog.message_class(binding.method.output_type)
        return self._channel(binding.area).unary_unary(
            binding.grpc_path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString,
        )

    async def call(
        self, binding: HttpBinding, request: Message, metadata: Sequence[tuple[str, str]]
    ) -> Message:
        """Call the binding's RPC; raises grpc.aio.AioRpcError with the service's status."""
        rpc = self._rpc(binding)
        response: Message = await rpc(request, metadata=tuple(metadata), timeout=self.timeout)
        return response

    async def call_with_headers(
        self, binding: HttpBinding, request: Message, metadata: Sequence[tuple[str, str]]
    ) -> tuple[Message, dict[str, str]]:
        """`call`, also returning the service's response headers (initial metadata, keys
        lower-case; e.g. `idempotent-replayed`)."""
        call = self._rpc(binding)(request, metadata=tuple(metadata), timeout=self.timeout)
        response: Message = await call
        headers = {
            str(key).lower(): value
            for key, value in (await call.initial_metadata() or ())
            if isinstance(value, str)
        }
        return response, headers

    async def close(self) -> None:
        """Close every channel."""
        for channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()
