"""Signed outbound webhooks to the client app (aiohttp client).

``POST <MPPO_NOTIFY_WEBHOOK_URL>`` with a JSON body (:func:`messages.webhook_body`) and the
headers ``Content-Type: application/json``, ``Mppo-Signature: t=<unix>,v1=<hex>`` (see
:mod:`notification_svc.domain.signature`) and ``Mppo-Notification-Id`` (the same on every
retry, for the receiver's de-duplication). Any 2xx is success; network errors and the
statuses :func:`mppo.platform.backoff.retryable_http_status` calls transient (408, 425, 429,
5xx) are retried; any other answer fails at once.
"""

from __future__ import annotations

import time

import aiohttp

from mppo.platform.backoff import retryable_http_status
from notification_svc.domain import signature
from notification_svc.domain.model import DeliveryError

HEADER_NOTIFICATION_ID = "Mppo-Notification-Id"


class WebhookPoster:
    """Posts signed webhooks to one URL."""

    def __init__(self, *, url: str, secret: str, timeout: float) -> None:
        self._url = url
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None

    async def send(self, *, delivery_id: str, body: bytes) -> None:
        """Deliver one webhook; raises DeliveryError."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self._timeout)
        headers = {
            "Content-Type": "application/json",
            signature.HEADER: signature.sign(self._secret, int(time.time()), body),
            HEADER_NOTIFICATION_ID: delivery_id,
        }
        try:
            async with self._http.post(self._url, data=body, headers=headers) as resp:
                status = resp.status
                await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryError(f"webhook {type(exc).__name__}") from None
        if 200 <= status < 300:
            return
        raise DeliveryError(f"webhook HTTP {status}", permanent=not retryable_http_status(status))

    async def close(self) -> None:
        """Close the HTTP session."""
        http, self._http = self._http, None
        if http is not None:
            await http.close()
