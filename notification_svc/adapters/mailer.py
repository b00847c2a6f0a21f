"""E-mail over SMTP (the standard library's smtplib, run in a worker thread).

Each message carries a stable ``Message-ID`` derived from the notification id, so when a
crash between sending and recording makes the sender deliver a row again, the receiver can
recognise the repeat. Error texts are reduced to SMTP codes and exception names: smtplib's
own messages can contain the recipient address, which must never be logged.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import smtplib
from collections.abc import Mapping
from email.message import EmailMessage

import aiohttp

from notification_svc.config import DEFAULT_SMTP_ADDR
from notification_svc.domain.messages import EmailContent
from notification_svc.domain.model import DeliveryError

logger = logging.getLogger(__name__)

MESSAGE_ID_DOMAIN = "mppo.notification"


def message_id(delivery_id: str) -> str:
    """The Message-ID of a notification's e-mail: the same on every (re)send."""
    return f"<{delivery_id}@{MESSAGE_ID_DOMAIN}>"


def build_message(
    *,
    delivery_id: str,
    mail_from: str,
    to: str,
    display_name: str,
    content: EmailContent,
    headers: Mapping[str, str],
) -> EmailMessage:
    """The MIME message for one notification."""
    msg = EmailMessage()
    msg["From"] = mail_from
    msg["To"] = email.utils.formataddr((display_name, to))
    msg["Subject"] = content.subject
    msg["Message-ID"] = message_id(delivery_id)
    msg["Date"] = email.utils.formatdate(usegmt=True)
    for name, value in headers.items():
        msg[name] = value
    msg.set_content(content.body)
    return msg


def _classify(exc: BaseException) -> DeliveryError:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        permanent = bool(codes) and all(code >= 500 for code in codes)
        return DeliveryError(f"SMTP recipient refused ({codes})", permanent=permanent)
    if isinstance(exc, smtplib.SMTPResponseException):
        return DeliveryError(
            f"SMTP {type(exc).__name__} {exc.smtp_code}", permanent=exc.smtp_code >= 500
        )
    return DeliveryError(f"SMTP {type(exc).__name__}")


class SmtpMailer:
    """Sends e-mail to ``smtp_addr``, or to the SMTP port the local sink announces."""

    def __init__(self, *, smtp_addr: str, sink_addr: str, mail_from: str, timeout: float) -> None:
        self._explicit = smtp_addr
        self._sink_addr = sink_addr
        self._mail_from = mail_from
        self._timeout = timeout
        self._resolved = smtp_addr

    async def _target(self) -> str:
        if self._resolved:
            return self._resolved
        if not self._sink_addr:
            self._resolved = DEFAULT_SMTP_ADDR
            return self._resolved
        url = f"http://{self._sink_addr}/info"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout)) as http,
                http.get(url) as resp,
            ):
                resp.raise_for_status()
                info = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise DeliveryError(f"SMTP sink info unavailable ({type(exc).__name__})") from None
        self._resolved = str(info["smtp_addr"])
        logger.info("e-mail goes to the SMTP sink at %s", self._resolved)
        return self._resolved

    async def send(
        self,
        *,
        delivery_id: str,
        to: str,
        display_name: str,
        content: EmailContent,
        headers: Mapping[str, str],
    ) -> None:
        """Deliver one e-mail; raises DeliveryError."""
        target = await self._target()
        msg = build_message(
            delivery_id=delivery_id,
            mail_from=self._mail_from,
            to=to,
            display_name=display_name,
            content=content,
            headers=headers,
        )
        host, _, port = target.rpartition(":")
        try:
            await asyncio.to_thread(self._send_blocking, host, int(port), msg)
        except (smtplib.SMTPException, OSError) as exc:
            if not self._explicit and not isinstance(exc, smtplib.SMTPResponseException):
                self._resolved = ""  # the sink may have moved: ask again next time
            raise _classify(exc) from None

    def _send_blocking(self, host: str, port: int, msg: EmailMessage) -> None:
        with smtplib.SMTP(host, port, timeout=self._timeout) as smtp:
            smtp.send_message(msg)
