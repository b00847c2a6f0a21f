"""Run a provider simulator: ``python -m payment_svc.simulators paypal|razorpay``.

``mppo dev up`` starts one of each (development only) and gives it, and the payment service,
the same credentials through the variables the payment service reads for the real provider
(``MPPO_PAYPAL_CLIENT_ID``…, ``MPPO_RAZORPAY_KEY_ID``…). The simulator listens on
``MPPO_<NAME>_ADDR`` and posts its signed webhooks to the gateway's route for it
(``http://$MPPO_GATEWAY_ADDR/payments/webhook/<name>``). It refuses to start outside
``MPPO_ENV=dev|test``: it would take anyone's "payment" as real.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import sys
from collections.abc import Mapping, Sequence

from mppo.platform.config import ConfigError, require
from mppo.platform.environment import is_development
from mppo.platform.logs import configure_logging
from payment_svc.simulators.paypal import PayPalSimulator
from payment_svc.simulators.razorpay import RazorpaySimulator
from payment_svc.simulators.server import SimulatorServer

logger = logging.getLogger("mppo.simulator")

NAMES = ("paypal", "razorpay")


def _given(env: Mapping[str, str], name: str) -> str:
    """`name`'s value, or a fresh one: with a credential unset nobody is sent here (`mppo dev
    up` leaves a provider whose variables the user exported to them), so any value will do."""
    return env.get(name, "").strip() or secrets.token_urlsafe(18)


def build(name: str, env: Mapping[str, str]) -> tuple[SimulatorServer, str, int]:
    """The simulator `name` configured from `env`, and the host and port it listens on."""
    if not is_development(env):
        raise ConfigError("the provider simulators run only with MPPO_ENV=dev or test")
    simulator: SimulatorServer
    if name == "paypal":
        simulator = PayPalSimulator(
            client_id=_given(env, "MPPO_PAYPAL_CLIENT_ID"),
            client_secret=_given(env, "MPPO_PAYPAL_CLIENT_SECRET"),
            webhook_id=_given(env, "MPPO_PAYPAL_WEBHOOK_ID"),
            signing_secret=_given(env, "MPPO_PAYPAL_SIMULATOR_SIGNING_SECRET"),
        )
    elif name == "razorpay":
        simulator = RazorpaySimulator(
            key_id=_given(env, "MPPO_RAZORPAY_KEY_ID"),
            key_secret=_given(env, "MPPO_RAZORPAY_KEY_SECRET"),
            webhook_secret=_given(env, "MPPO_RAZORPAY_WEBHOOK_SECRET"),
        )
    else:
        raise ConfigError(f"no simulator {name!r}; one of {', '.join(NAMES)}")
    addr = require(env, f"MPPO_{name.upper()}_ADDR")
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"MPPO_{name.upper()}_ADDR={addr!r} is not host:port")
    gateway = env.get("MPPO_GATEWAY_ADDR", "").strip()
    if gateway:
        simulator.deliver_to = f"http://{gateway}/payments/webhook/{name}"
    return simulator, host, int(port)


async def serve(simulator: SimulatorServer, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    url = await simulator.start(host, port)
    logger.info("serving on %s, webhooks to %s", url, simulator.deliver_to or "nowhere")
    try:
        await stop.wait()
    finally:
        await simulator.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.stderr.write(f"usage: python -m payment_svc.simulators {'|'.join(NAMES)}\n")
        return 2
    try:
        simulator, host, port = build(args[0], os.environ)
    except ConfigError as exc:
        sys.stderr.write(f"simulator {args[0]}: {exc}\n")
        return 2
    configure_logging(args[0], os.environ.get("MPPO_LOG_LEVEL", "INFO").upper())
    asyncio.run(serve(simulator, host, port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
