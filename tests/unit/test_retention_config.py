"""Retention settings (MPPO_RETENTION_*): defaults per MPPO_ENV, and the combinations refused at
start because they would let a duplicate through or break a promise to callers."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from nats.js.api import DiscardPolicy, RetentionPolicy

from mppo.platform.config import ConfigError, InfraConfig, ServiceConfig
from mppo.platform.messaging import STREAMS, StreamLimits
from mppo.platform.retention import (
    DEFAULT_BYTES,
    DLQ_MAX_BYTES_VAR,
    DUPLICATE_WINDOW_VAR,
    IDEMPOTENCY_VAR,
    INBOX_VAR,
    STREAM_MAX_AGE_VAR,
    STREAM_MAX_BYTES_VAR,
    WEBHOOKS_VAR,
    PruneTarget,
    RetentionSettings,
    platform_targets,
)

REPO = Path(__file__).resolve().parents[2]
GOOD_ENV = {
    "MPPO_GROUP_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/group_db",
    "MPPO_REDIS_URL": "redis://127.0.0.1:6379/0",
    "MPPO_NATS_URL": "nats://127.0.0.1:4222",
}
SHORT = {  # what the tests use: windows of seconds
    "MPPO_ENV": "test",
    STREAM_MAX_AGE_VAR: "3",
    DUPLICATE_WINDOW_VAR: "1",
    INBOX_VAR: "5",
    IDEMPOTENCY_VAR: "2",
    "MPPO_RETENTION_OUTBOX_SECONDS": "1.5",
    WEBHOOKS_VAR: "4",
    "MPPO_RETENTION_INTERVAL_SECONDS": "0.2",
    "MPPO_RETENTION_BATCH": "50",
}


def test_production_defaults() -> None:
    settings = RetentionSettings.from_env({})
    assert settings == RetentionSettings()
    assert settings.outbox == timedelta(days=3)
    assert settings.inbox == timedelta(days=14)
    assert settings.idempotency == timedelta(hours=24)
    assert settings.webhooks == timedelta(days=180)
    assert settings.streams.max_age == 7 * 24 * 3600
    assert settings.streams.duplicate_window == 120
    assert (settings.streams.max_bytes, settings.streams.dlq_max_bytes) == DEFAULT_BYTES["prod"]
    assert settings.inbox.total_seconds() > (
        settings.streams.max_age + settings.streams.duplicate_window
    )


@pytest.mark.parametrize("tier", ["dev", "test"])
def test_development_byte_limits_are_smaller_and_windows_the_same(tier: str) -> None:
    settings = RetentionSettings.from_env({"MPPO_ENV": tier})
    assert (settings.streams.max_bytes, settings.streams.dlq_max_bytes) == DEFAULT_BYTES[tier]
    assert settings.inbox == RetentionSettings().inbox
    assert settings.streams.max_age == RetentionSettings().streams.max_age


def test_short_windows_are_usable_in_tests() -> None:
    settings = RetentionSettings.from_env(SHORT)
    assert settings.streams == StreamLimits(max_age=3, duplicate_window=1)
    assert settings.inbox == timedelta(seconds=5)
    assert settings.idempotency == timedelta(seconds=2)
    assert settings.outbox == timedelta(seconds=1.5)
    assert (settings.interval, settings.batch) == (0.2, 50)


@pytest.mark.parametrize("inbox", ["4", "3.5", "1"])
def test_an_inbox_window_not_longer_than_max_age_plus_duplicate_window_is_refused(
    inbox: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        RetentionSettings.from_env({**SHORT, INBOX_VAR: inbox})
    message = str(caught.value)
    for name in (INBOX_VAR, STREAM_MAX_AGE_VAR, DUPLICATE_WINDOW_VAR):
        assert name in message
    assert "twice" in message


def test_shortening_the_stream_age_alone_is_refused_against_the_default_inbox() -> None:
    RetentionSettings.from_env({STREAM_MAX_AGE_VAR: str(13 * 24 * 3600)})
    with pytest.raises(ConfigError, match=INBOX_VAR):
        RetentionSettings.from_env({STREAM_MAX_AGE_VAR: str(14 * 24 * 3600)})


def test_a_duplicate_window_longer_than_the_stream_age_is_refused() -> None:
    with pytest.raises(ConfigError, match=f"{DUPLICATE_WINDOW_VAR}.*{STREAM_MAX_AGE_VAR}"):
        RetentionSettings.from_env({**SHORT, DUPLICATE_WINDOW_VAR: "4", INBOX_VAR: "60"})


def test_idempotency_keys_are_kept_24_hours_in_prod() -> None:
    with pytest.raises(ConfigError, match=IDEMPOTENCY_VAR):
        RetentionSettings.from_env({IDEMPOTENCY_VAR: "3600"})
    assert RetentionSettings.from_env({IDEMPOTENCY_VAR: "172800"}).idempotency == timedelta(days=2)
    assert RetentionSettings.from_env({"MPPO_ENV": "test", IDEMPOTENCY_VAR: "1"}).idempotency


def test_webhook_records_are_kept_a_week_at_least_in_prod() -> None:
    with pytest.raises(ConfigError, match=WEBHOOKS_VAR):
        RetentionSettings.from_env({WEBHOOKS_VAR: "86400"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (INBOX_VAR, "soon"),
        (STREAM_MAX_AGE_VAR, "0"),
        (STREAM_MAX_BYTES_VAR, "-1"),
        (DLQ_MAX_BYTES_VAR, "1.5"),
        ("MPPO_RETENTION_BATCH", "0"),
        ("MPPO_RETENTION_STREAM_ALERT_RATIO", "2"),
        ("MPPO_RETENTION_INTERVAL_SECONDS", "nan"),
    ],
)
def test_malformed_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        RetentionSettings.from_env({"MPPO_ENV": "test", name: value})


def test_service_config_carries_retention_and_refuses_at_start() -> None:
    config = ServiceConfig.from_env("group", {**GOOD_ENV, **SHORT})
    assert config.infra.retention == RetentionSettings.from_env(SHORT)
    with pytest.raises(ConfigError, match=INBOX_VAR):
        InfraConfig.from_env("group", {**GOOD_ENV, **SHORT, INBOX_VAR: "2"})
    built = InfraConfig("postgresql://x/y", "redis://r", "nats://n", "")
    assert built.retention == RetentionSettings()


def test_stream_configs_limits_retention_discard_new_and_a_dlq_without_age() -> None:
    limits = StreamLimits(max_age=60, duplicate_window=5, max_bytes=1000, dlq_max_bytes=500)
    for base in STREAMS:
        config = limits.config(base, "t1")
        assert config.retention == RetentionPolicy.LIMITS
        assert config.discard == DiscardPolicy.NEW
        assert config.duplicate_window == 5
        assert config.name == f"T1_{base}"
        if base == "MPPO_DLQ":
            assert (config.max_age, config.max_bytes) == (0.0, 500)
        else:
            assert (config.max_age, config.max_bytes) == (60, 1000)
    assert StreamLimits().config("MPPO_GROUP").max_bytes == -1  # 0: no byte limit


def test_production_byte_limits_fit_the_deployed_nats_store() -> None:
    """NATS reserves each stream's max_bytes against max_file_store when creating it."""
    conf = (REPO / "deploy" / "nats.conf").read_text()
    found = re.search(r"max_file_store:\s*(\d+)\s*GB", conf)
    assert found is not None
    store = int(found.group(1)) * 1000**3
    limits = RetentionSettings().streams
    reserved = sum(limits.max_bytes_of(base) for base in STREAMS)
    assert reserved <= 0.75 * store  # room left for growth and other accounts


def test_prune_targets_are_plain_identifiers_with_positive_windows() -> None:
    tables = [t.table for t in platform_targets(RetentionSettings())]
    assert tables == ["outbox", "inbox", "idempotency_keys"]
    with pytest.raises(ValueError, match="identifier"):
        PruneTarget("webhook_events; DROP TABLE x", "received_at", timedelta(days=1))
    with pytest.raises(ValueError, match="positive"):
        PruneTarget("webhook_events", "received_at", timedelta(0))
    sql = str(PruneTarget("t", "at", timedelta(1), "status = 'done'").delete_batch())
    assert "FOR UPDATE SKIP LOCKED" in sql
    assert "AND (status = 'done')" in sql
    assert "LIMIT :batch" in sql
