"""HTTP client for a merchant backend (the sandbox merchant speaks this API).

Every request is signed (adapters/merchant_signature.py) and every mutating request carries an
``Idempotency-Key`` header; a retry re-sends the same key, so the merchant applies it once.
Each attempt has a timeout; connection errors, timeouts, the statuses
:func:`mppo.platform.backoff.retryable_http_status` calls transient (408, 425, 429, 5xx) and
"same key in progress" answers are retried a bounded number of times with exponential backoff
and jitter, after which :class:`MerchantUnavailableError` is raised. A 4xx answer with an
``error`` code is a refusal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from mppo.platform.backoff import retryable_http_status
from order_svc.adapters.merchant_signature import HEADER as SIGNATURE_HEADER
from order_svc.adapters.merchant_signature import sign
from order_svc.domain.model import FailureReason, Line
from order_svc.domain.validator import CatalogueItem
from order_svc.service_layer.ports import (
    MerchantClient,
    MerchantRefusedError,
    MerchantUnavailableError,
    Placement,
)

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
MERCHANT_ID_HEADER = "X-Mppo-Merchant-Id"
_REFUSAL_REASONS = {reason.value: reason for reason in FailureReason}
_RETRYABLE_CODES = {"IDEMPOTENCY_KEY_IN_PROGRESS"}


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one request: attempts in all, per-attempt timeout, backoff."""

    attempts: int = 3
    timeout_seconds: float = 3.0
    backoff_seconds: float = 0.2
    max_backoff_seconds: float = 2.0

    def delay(self, attempt: int) -> float:
        """Wait before attempt `attempt + 1` (exponential, with ±20 % jitter)."""
        base = min(self.backoff_seconds * 2 ** (attempt - 1), self.max_backoff_seconds)
        return float(base * random.uniform(0.8, 1.2))


class _RetryableError(Exception):
    """One attempt failed in a way another attempt may fix."""


class HttpMerchantClient(MerchantClient):
    """A merchant reached over HTTP at `base_url`."""

    def __init__(
        self,
        base_url: str,
        secret: bytes,
        *,
        merchant_id: str = "",
        policy: RetryPolicy | None = None,
    ) -> None:
        self._base = URL(base_url.rstrip("/"))
        self._secret = secret
        self._merchant_id = merchant_id
        self._policy = policy or RetryPolicy()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def catalogue(self) -> Mapping[str, CatalogueItem]:
        """GET /v1/catalogue."""
        body = await self._request("GET", "/v1/catalogue", None, None)
        items: dict[str, CatalogueItem] = {}
        for raw in body.get("items", []):
            item = CatalogueItem(
                sku=str(raw["sku"]),
                name=str(raw.get("name", "")),
                unit_price_minor=int(raw["unit_price_minor"]),
                currency=str(raw["currency"]),
                stock=int(raw["stock"]),
            )
            items[item.sku] = item
        return items

    async def reserve(
        self, *, reference: str, lines: Sequence[Line], currency: str, idempotency_key: str
    ) -> str:
        """POST /v1/reservations."""
        payload = {
            "reference": reference,
            "currency": currency,
            "items": [
                {"sku": ln.sku, "quantity": ln.quantity, "unit_price_minor": ln.unit_price_minor}
                for ln in lines
            ],
        }
        body = await self._request("POST", "/v1/reservations", payload, idempotency_key)
        return str(body["reservation_id"])

    async def place(
        self,
        *,
        reference: str,
        reservation_id: str,
        total_minor: int,
        currency: str,
        idempotency_key: str,
    ) -> Placement:
        """POST /v1/orders."""
        payload = {
            "reference": reference,
            "reservation_id": reservation_id,
            "total_minor": total_minor,
            "currency": currency,
        }
        body = await self._request("POST", "/v1/orders", payload, idempotency_key)
        return Placement(merchant_order_id=str(body["merchant_order_id"]), status=body["status"])

    async def cancel(self, *, reference: str, idempotency_key: str) -> str:
        """POST /v1/orders/cancel (by our reference: cancels the order or frees the hold)."""
        payload = {"reference": reference}
        body = await self._request("POST", "/v1/orders/cancel", payload, idempotency_key)
        return str(body.get("result", ""))

    async def _request(
        self, method: str, path: str, payload: Mapping[str, Any] | None, key: str | None
    ) -> dict[str, Any]:
        url = self._base.with_path(self._base.path.rstrip("/") + path)
        data = b"" if payload is None else json.dumps(payload, sort_keys=True).encode()
        last_error = "no attempt made"
        for attempt in range(1, self._policy.attempts + 1):
            try:
                return await self._attempt(method, url, data, key)
            except _RetryableError as exc:
                last_error = str(exc)
                logger.warning(
                    "merchant %s %s attempt %s/%s failed: %s",
                    method,
                    path,
                    attempt,
                    self._policy.attempts,
                    last_error,
                )
                if attempt < self._policy.attempts:
                    await asyncio.sleep(self._policy.delay(attempt))
        raise MerchantUnavailableError(f"{method} {path}: {last_error}")

    async def _attempt(self, method: str, url: URL, data: bytes, key: str | None) -> dict[str, Any]:
        headers = {
            SIGNATURE_HEADER: sign(self._secret, method, url.raw_path_qs, data),
            "Content-Type": "application/json",
        }
        if key is not None:
            headers[IDEMPOTENCY_HEADER] = key
        if self._merchant_id:
            headers[MERCHANT_ID_HEADER] = self._merchant_id
        timeout = aiohttp.ClientTimeout(total=self._policy.timeout_seconds)
        try:
            async with self._client().request(
                method, url, data=data or None, headers=headers, timeout=timeout
            ) as response:
                status = response.status
                text = await response.text()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _RetryableError(f"{type(exc).__name__}: {exc}") from exc
        try:
            body: dict[str, Any] = json.loads(text) if text else {}
        except json.JSONDecodeError:
            body = {"detail": text[:200]}
        if 200 <= status < 300:
            return body
        code = str(body.get("error", ""))
        detail = str(body.get("detail", "")) or f"HTTP {status}"
        if retryable_http_status(status) or code in _RETRYABLE_CODES:
            raise _RetryableError(f"HTTP {status} {code} {detail}".strip())
        if status in (401, 403):
            raise MerchantUnavailableError(f"merchant refused our credentials: {detail}")
        reason = _REFUSAL_REASONS.get(code, FailureReason.MERCHANT_REJECTED)
        raise MerchantRefusedError(reason, detail)


class SingleMerchantDirectory:
    """Every merchant id is served by one backend (the sandbox, or one real integration)."""

    def __init__(self, client: MerchantClient) -> None:
        self._client = client

    def client_for(self, merchant_id: str) -> MerchantClient:
        """The one backend."""
        return self._client

    async def close(self) -> None:
        """Close the backend's connections."""
        await self._client.close()
