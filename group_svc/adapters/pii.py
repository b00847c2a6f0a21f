"""Encryption of personal data at rest (member e-mail and phone): AES-256-GCM with key ids.

Keys come from ``MPPO_GROUP_PII_KEYS`` as ``k1:<base64 32 bytes>,k2:<...>``; the first is the
active key used for new data, the others still decrypt old rows (rotation: put the new key
first, keep the old ones until every row is re-encrypted). The key id is stored beside each
ciphertext and bound to it as associated data. When the variable is unset and ``MPPO_ENV`` is
``dev`` or ``test`` (the default is ``prod``, see mppo.platform.environment), a fixed, publicly
known DEVELOPMENT key is used and a warning logged; in any other environment a missing key, or
a keyring holding the development key, stops the service.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mppo.platform.config import ConfigError
from mppo.platform.environment import environment, is_development

logger = logging.getLogger(__name__)

KEYS_ENV = "MPPO_GROUP_PII_KEYS"
ENV_ENV = "MPPO_ENV"
NONCE_BYTES = 12
#: DEVELOPMENT ONLY — not a secret. Used when MPPO_GROUP_PII_KEYS is unset in dev/test.
DEV_KEY_ID = "dev-insecure"
DEV_KEY = b"mppo-dev-only-NOT-A-SECRET-key!!"


class PiiDecryptionError(Exception):
    """A ciphertext does not decrypt (unknown key id or tampered data)."""


class PiiKeyring:
    """Encrypts with the active key, decrypts with any known key."""

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        if active not in keys:
            raise ConfigError(f"active PII key {active!r} is not in the keyring")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.active_key_id = active

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PiiKeyring:
        """Read the keyring as described in the module docstring."""
        source = os.environ if env is None else env
        spec = source.get(KEYS_ENV, "").strip()
        if not spec:
            if not is_development(source):
                raise ConfigError(f"{KEYS_ENV} is required when {ENV_ENV}={environment(source)}")
            logger.warning("%s unset: using the DEVELOPMENT key (not for real data)", KEYS_ENV)
            return cls({DEV_KEY_ID: DEV_KEY}, DEV_KEY_ID)
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for part in spec.split(","):
            key_id, sep, encoded = part.strip().partition(":")
            try:
                key = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if not sep or not key_id or len(key) != 32 or key_id in keys:
                raise ConfigError(f"{KEYS_ENV}: entry {key_id!r} is not id:<base64 of 32 bytes>")
            if key == DEV_KEY and not is_development(source):
                raise ConfigError(
                    f"{KEYS_ENV}: {key_id!r} is the published development key; refused when "
                    f"{ENV_ENV}={environment(source)}"
                )
            keys[key_id] = key
            order.append(key_id)
        return cls(keys, order[0])

    def encrypt(self, plaintext: str) -> tuple[bytes, str]:
        """``(nonce || ciphertext, key id)`` for `plaintext`."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.active_key_id].encrypt(
            nonce, plaintext.encode(), self.active_key_id.encode()
        )
        return nonce + sealed, self.active_key_id

    def decrypt(self, blob: bytes, key_id: str) -> str:
        """The plaintext of a value sealed by :meth:`encrypt`."""
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PiiDecryptionError(f"unknown PII key id {key_id!r}")
        try:
            return cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], key_id.encode()).decode()
        except InvalidTag:
            raise PiiDecryptionError("PII ciphertext does not authenticate") from None

    def seal_bytes(self, data: bytes) -> bytes:
        """Encrypt arbitrary bytes (cache snapshots), key id included in the output."""
        sealed, key_id = self.encrypt(base64.b64encode(data).decode())
        return key_id.encode() + b"\x00" + sealed

    def open_bytes(self, blob: bytes) -> bytes:
        """Inverse of :meth:`seal_bytes`."""
        key_id, _, sealed = blob.partition(b"\x00")
        return base64.b64decode(self.decrypt(sealed, key_id.decode()))
