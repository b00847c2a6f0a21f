"""The service kernel's pieces that need no servers: settings, money, the retry rules, the
error mapping, the worker loop and the unit of work's bookkeeping (against a fake session)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

from mppo.group.v1 import group_events_pb2
from mppo.platform import money
from mppo.platform.backoff import retryable_http_status
from mppo.platform.config import ConfigError
from mppo.platform.errors import (
    ConflictError,
    DomainError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from mppo.platform.event_types import new_event
from mppo.platform.events import Event
from mppo.platform.rpc_status import code_of, error_for, from_rpc_error, is_retryable, to_status
from mppo.platform.settings import Env
from mppo.platform.unit_of_work import UnitOfWork
from mppo.platform.worker import LoopWorker

# --------------------------------------------------------------------------- settings


def test_env_reads_typed_values_and_defaults() -> None:
    env = Env(
        {
            "N": "2.5",
            "I": "7",
            "S": "90",
            "ON": "yes",
            "OFF": "0",
            "A": "db:5432",
            "U": "https://x.test/h",
            "C": "Closed",
        }
    )
    assert env.number("N", 1.0) == 2.5
    assert env.number("MISSING", 1.5) == 1.5
    assert env.integer("I", 1) == 7
    assert env.seconds("S", 1) == timedelta(seconds=90)
    assert env.switch("ON", False) is True
    assert env.switch("OFF", True) is False
    assert env.addr("A") == "db:5432"
    assert env.url("U") == "https://x.test/h"
    assert env.choice("C", ("open", "closed"), "open") == "closed"


@pytest.mark.parametrize(
    ("call", "value", "named"),
    [
        (lambda e: e.number("X", 1.0), "fast", "X='fast' is not a number"),
        (lambda e: e.number("X", 1.0), "nan", "not a finite number"),
        (lambda e: e.number("X", 1.0, minimum=0.5), "0.1", "at least 0.5"),
        (lambda e: e.integer("X", 1, maximum=10), "11", "at most 10"),
        (lambda e: e.integer("X", 1), "1.5", "not a whole number"),
        (lambda e: e.switch("X", True), "maybe", "must be on or off"),
        (lambda e: e.addr("X"), "nohost", "not host:port"),
        (lambda e: e.url("X"), "ftp://x", "http(s) URL"),
        (lambda e: e.choice("X", ("a", "b"), "a"), "c", "one of a, b"),
        (lambda e: e.required("X"), "", "X is not set"),
    ],
)
def test_env_refuses_malformed_values_naming_the_variable(
    call: Any, value: str, named: str
) -> None:
    with pytest.raises(ConfigError, match="X") as raised:
        call(Env({"X": value}))
    assert named in str(raised.value)


# --------------------------------------------------------------------------- money


@pytest.mark.parametrize(
    ("code", "places", "minor", "text"),
    [("USD", 2, 1050, "10.50"), ("JPY", 0, 1050, "1050"), ("KWD", 3, 1050, "1.050")],
)
def test_one_currency_table_round_trips_exactly(
    code: str, places: int, minor: int, text: str
) -> None:
    assert money.exponent(code) == places
    assert money.to_decimal_string(minor, code) == text
    assert money.from_decimal_string(text, code) == minor


def test_unknown_currency_and_too_many_decimals_are_field_violations() -> None:
    with pytest.raises(InvalidArgumentError) as unknown:
        money.exponent("XYZ", field="cart.currency_code")
    assert unknown.value.violations[0].field == "cart.currency_code"
    with pytest.raises(InvalidArgumentError, match="2 decimal places"):
        money.from_decimal_string("1.005", "USD")
    assert money.format_minor(-1234, "USD") == "-12.34 USD"


# --------------------------------------------------------------------------- retry rules


@pytest.mark.parametrize(
    ("status", "retry"),
    [(200, False), (400, False), (404, False), (408, True), (429, True), (500, True), (503, True)],
)
def test_one_http_retry_rule(status: int, retry: bool) -> None:
    assert retryable_http_status(status) is retry


class _RpcError(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, error: DomainError | None = None) -> None:
        trailers: Any = ()
        if error is not None:
            status = to_status(error)
            trailers = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
        super().__init__(code, grpc.aio.Metadata(), trailers, str(error or code.name), None)


def test_a_peers_status_becomes_the_domain_error_it_described() -> None:
    refused = FailedPreconditionError(
        "already voided", "PAYMENT_VOIDED", [FieldViolation("p", "x")]
    )
    back = from_rpc_error(_RpcError(grpc.StatusCode.FAILED_PRECONDITION, refused))
    assert isinstance(back, FailedPreconditionError)
    assert back.reason == "PAYMENT_VOIDED"
    assert back.violations == (FieldViolation("p", "x"),)
    assert not is_retryable(back)
    assert isinstance(from_rpc_error(_RpcError(grpc.StatusCode.NOT_FOUND)), NotFoundError)
    gone = from_rpc_error(_RpcError(grpc.StatusCode.DEADLINE_EXCEEDED))
    assert isinstance(gone, UnavailableError)
    assert is_retryable(gone)
    assert is_retryable(ConflictError("version moved"))
    assert is_retryable(_RpcError(grpc.StatusCode.UNAVAILABLE))
    assert not is_retryable(_RpcError(grpc.StatusCode.PERMISSION_DENIED))


def test_domain_errors_map_to_rich_status_and_outages_to_unavailable() -> None:
    bad = InvalidArgumentError("bad", [FieldViolation("host.display_name", "too long")])
    status = to_status(bad)
    assert status.code == code_pb2.INVALID_ARGUMENT
    request = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(request)
    assert request.field_violations[0].field == "host.display_name"
    assert code_of(error_for(ConnectionRefusedError(), "t")) == code_pb2.UNAVAILABLE
    assert code_of(error_for(TimeoutError(), "t")) == code_pb2.UNAVAILABLE
    assert code_of(error_for(KeyError("x"), "t")) == code_pb2.INTERNAL
    assert error_for(KeyError("secret detail"), "t").message == "internal error"


def test_domain_errors_carry_no_transport() -> None:
    import mppo.platform.errors as errors

    with open(errors.__file__) as file:
        source = file.read()
    assert "import grpc" not in source
    assert "code_pb2" not in source


# --------------------------------------------------------------------------- worker loop


class _CountingWorker(LoopWorker):
    name = "counting"

    def __init__(self, poll: float, backlog: int = 0, fail_first: int = 0) -> None:
        super().__init__(poll_interval=poll, max_backoff=0.05)
        self.rounds = 0
        self.backlog = backlog
        self.fail_first = fail_first
        self.closed = False

    async def work(self) -> bool:
        self.rounds += 1
        if self.fail_first:
            self.fail_first -= 1
            raise RuntimeError("database down")
        if self.backlog:
            self.backlog -= 1
        return self.backlog > 0

    async def closing(self) -> None:
        self.closed = True


async def test_worker_drains_a_backlog_without_waiting_and_wakes_on_demand() -> None:
    worker = _CountingWorker(poll=30.0, backlog=5)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.05)
    assert worker.rounds == 5  # busy rounds ran back to back, then it waits for the poll
    worker.wake()
    await asyncio.sleep(0.05)
    assert worker.rounds == 6  # a wake-up ran one more round long before the 30 s poll
    worker.stop()
    await asyncio.wait_for(task, 1)
    assert worker.closed


async def test_worker_backs_off_after_failures_and_recovers() -> None:
    worker = _CountingWorker(poll=0.01, fail_first=3, backlog=2)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.4)
    worker.stop()
    await asyncio.wait_for(task, 1)
    assert worker.fail_first == 0
    assert worker.backlog == 0  # the loop survived the failures and did the work


async def test_worker_stops_promptly_while_waiting() -> None:
    worker = _CountingWorker(poll=60.0)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.02)
    worker.stop()
    await asyncio.wait_for(task, 0.5)


# --------------------------------------------------------------------------- unit of work


class _FakeSession:
    """Records what the unit of work asks of a session."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def execute(self, statement: Any, params: Any = None) -> None:
        rows = len(params["ids"]) if isinstance(params, dict) and "ids" in params else 1
        self.log.append(f"execute {type(statement).__name__} x{rows}")

    async def commit(self) -> None:
        self.log.append("commit")

    async def rollback(self) -> None:
        self.log.append("rollback")

    async def close(self) -> None:
        self.log.append("close")


class _Group:
    def __init__(self, group_id: str) -> None:
        self.group_id = group_id
        self.events: list[Any] = []


def _translate(aggregate: _Group, event: Any) -> Event:
    return new_event(aggregate.group_id, event)


async def test_unit_of_work_drains_aggregate_events_and_runs_callbacks_after_commit() -> None:
    log: list[str] = []
    uow = UnitOfWork(lambda: _FakeSession(log), _translate)  # type: ignore[arg-type]
    woken: list[str] = []
    async with uow:
        group = _Group("g-1")
        uow.track(group)
        uow.track(group)  # tracked once
        group.events.append(group_events_pb2.GroupCreated(group_id="g-1"))
        group.events.append(group_events_pb2.GroupOpened(group_id="g-1"))
        uow.after_commit(lambda: woken.append("relay"))
        assert woken == []
        await uow.commit()
        assert woken == ["relay"]
        assert group.events == []  # drained
        # both events and the relays' wake-up in one round trip, then the commit
        assert log[:2] == ["execute TextClause x2", "commit"]
        await uow.commit()  # nothing new: no outbox write, callbacks already ran
        assert woken == ["relay"]
        assert log.count("execute TextClause x2") == 1


async def test_unit_of_work_forgets_events_and_callbacks_on_rollback() -> None:
    log: list[str] = []
    uow = UnitOfWork(lambda: _FakeSession(log), _translate)  # type: ignore[arg-type]
    woken: list[str] = []

    async def failing_handler() -> None:
        async with uow:
            uow.collect(new_event("g-2", group_events_pb2.GroupCreated(group_id="g-2")))
            uow.after_commit(lambda: woken.append("never"))
            raise RuntimeError("handler failed")

    with pytest.raises(RuntimeError):
        await failing_handler()
    assert woken == []
    assert "commit" not in log
    assert log[-2:] == ["rollback", "close"]
