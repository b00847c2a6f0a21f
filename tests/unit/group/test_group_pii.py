"""PII keyring: AES-GCM with key ids, rotation, tamper detection, dev key only in dev/test."""

from __future__ import annotations

import base64
import os

import pytest

from group_svc.adapters.pii import DEV_KEY, DEV_KEY_ID, PiiDecryptionError, PiiKeyring
from group_svc.config import GroupSettings
from mppo.platform.config import ConfigError


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_rotation_encrypts_with_the_first_key_and_decrypts_with_any() -> None:
    old_key = key()
    old = PiiKeyring.from_env({"MPPO_GROUP_PII_KEYS": f"k1:{old_key}"})
    blob, key_id = old.encrypt("ada@example.com")
    assert key_id == "k1"
    assert b"ada@example.com" not in blob
    rotated = PiiKeyring.from_env({"MPPO_GROUP_PII_KEYS": f"k2:{key()},k1:{old_key}"})
    assert rotated.active_key_id == "k2"
    assert rotated.decrypt(blob, "k1") == "ada@example.com"
    assert rotated.encrypt("x")[1] == "k2"
    assert rotated.open_bytes(rotated.seal_bytes(b"\x00snap")) == b"\x00snap"


def test_tampering_and_unknown_keys_are_detected() -> None:
    ring = PiiKeyring.from_env({"MPPO_GROUP_PII_KEYS": f"k1:{key()}"})
    blob, key_id = ring.encrypt("secret")
    with pytest.raises(PiiDecryptionError):
        ring.decrypt(blob[:-1] + bytes([blob[-1] ^ 1]), key_id)
    with pytest.raises(PiiDecryptionError):
        ring.decrypt(blob, "k9")


def test_dev_key_only_in_dev_and_test() -> None:
    assert PiiKeyring.from_env({"MPPO_ENV": "dev"}).active_key_id == DEV_KEY_ID
    assert PiiKeyring.from_env({"MPPO_ENV": "test"}).active_key_id == DEV_KEY_ID
    with pytest.raises(ConfigError, match="MPPO_ENV"):
        PiiKeyring.from_env({"MPPO_ENV": "production"})  # not an environment at all
    for bad in ("k1", "k1:notbase64!", f"k1:{base64.b64encode(b'short').decode()}"):
        with pytest.raises(ConfigError):
            PiiKeyring.from_env({"MPPO_ENV": "test", "MPPO_GROUP_PII_KEYS": bad})


def test_production_is_the_default_and_refuses_the_development_key() -> None:
    # unset MPPO_ENV is prod: no key, or the published development key, stops the service
    with pytest.raises(ConfigError, match="MPPO_GROUP_PII_KEYS is required when MPPO_ENV=prod"):
        PiiKeyring.from_env({})
    published = f"old:{base64.b64encode(DEV_KEY).decode()}"
    with pytest.raises(ConfigError, match="published development key"):
        PiiKeyring.from_env({"MPPO_GROUP_PII_KEYS": f"k1:{key()},{published}"})
    assert PiiKeyring.from_env({"MPPO_GROUP_PII_KEYS": f"k1:{key()}"}).active_key_id == "k1"


def test_group_settings() -> None:
    settings = GroupSettings.from_env({"MPPO_GROUP_HOST_GRACE_SECONDS": "5"})
    assert settings.host_grace.total_seconds() == 5
    assert settings.scheduler_enabled
    with pytest.raises(ConfigError):
        GroupSettings.from_env({"MPPO_GROUP_SCHEDULER": "maybe"})
    with pytest.raises(ConfigError):
        GroupSettings.from_env({"MPPO_GROUP_REMINDER_LEAD_SECONDS": "-1"})
