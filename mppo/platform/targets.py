"""Where a peer service is, as a gRPC target balanced over its replicas.

``MPPO_<SERVICE>_ADDR`` names the peer for its callers in one of three forms:

* ``host:port`` — one address (what a single process, compose or a ClusterIP Service gives);
* ``10.0.0.7:50051,10.0.0.8:50051`` — several replicas by IP address (``mppo dev up
  --replicas N`` hands these out); they become gRPC's ``ipv4:``/``ipv6:`` target;
* ``dns:///group:50051`` (or any ``scheme:`` target gRPC knows: ``dns:``, ``ipv4:``,
  ``ipv6:``, ``unix:``) — a name resolving to every replica, as a headless Kubernetes Service
  does; gRPC re-resolves it when a connection drops.

Every channel to a peer uses gRPC's own client-side ``round_robin`` load balancing
(:func:`channel_options`): one connection per resolved address, calls spread across the ready
ones, a replica that goes away simply drops out of the rotation (its calls in flight fail
with UNAVAILABLE and are retried by the caller with the same idempotency key).

A list's default authority (the name checked against the server certificate) is its first
address, so a dev certificate carrying ``127.0.0.1`` verifies every replica; a ``dns:`` target
checks the resolved name (certificates carry the Service name as a DNS SAN, docs/security.md).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from mppo.platform.config import ConfigError

__all__ = [
    "ROUND_ROBIN_SERVICE_CONFIG",
    "channel_options",
    "grpc_target",
    "split_target",
    "validate_target",
]

#: the service config every peer channel gets: client-side round robin over the addresses
ROUND_ROBIN_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})

_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")


def _host_port(name: str, item: str) -> tuple[str, int]:
    host, sep, port = item.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConfigError(f"{name}: {item!r} is not host:port")
    return host, int(port)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def split_target(value: str, name: str = "address") -> list[str]:
    """The ``host:port`` items of a plain or listed address (``[]`` for a scheme target)."""
    value = value.strip()
    if value.startswith(_SCHEMES):
        return []
    items = [item.strip() for item in value.split(",")]
    if not value or any(not item for item in items):
        raise ConfigError(f"{name}={value!r} is not host:port[,host:port...]")
    for item in items:
        _host_port(name, item)
    return items


def validate_target(name: str, value: str) -> str:
    """``value`` (stripped) if it is a target form this module accepts; ConfigError naming
    ``name`` otherwise."""
    value = value.strip()
    if value.startswith(_SCHEMES):
        if not value.split(":", 1)[1].strip("/"):
            raise ConfigError(f"{name}={value!r} names no address")
        return value
    items = split_target(value, name)
    if len(items) > 1:
        hosts = [_host_port(name, item)[0] for item in items]
        ips = [_ip(host) for host in hosts]
        if any(ip is None for ip in ips):
            raise ConfigError(
                f"{name}={value!r}: several addresses must be IP addresses; for names use "
                "one dns:///<name>:<port> target that resolves to every replica"
            )
        if len({ip.version for ip in ips if ip is not None}) > 1:
            raise ConfigError(f"{name}={value!r} mixes IPv4 and IPv6 addresses")
    return value


def grpc_target(value: str) -> str:
    """The gRPC target string for an address in any accepted form (see the module doc)."""
    value = validate_target("address", value)
    if value.startswith(_SCHEMES):
        return value
    items = split_target(value)
    if len(items) == 1:
        return value
    first = _ip(_host_port("address", items[0])[0])
    scheme = "ipv6" if first is not None and first.version == 6 else "ipv4"
    return f"{scheme}:{','.join(items)}"


def channel_options(
    value: str, extra: list[tuple[str, Any]] | None = None
) -> list[tuple[str, Any]]:
    """Channel options for a peer at ``value``: round robin, and for an address list the
    first address as the authority (see the module doc)."""
    options: list[tuple[str, Any]] = [("grpc.service_config", ROUND_ROBIN_SERVICE_CONFIG)]
    value = value.strip()
    if not value.startswith(_SCHEMES):
        items = split_target(value)
        if len(items) > 1:
            options.append(("grpc.default_authority", items[0]))
    names = {key for key, _ in extra or ()}
    return [*(o for o in options if o[0] not in names), *(extra or ())]
