"""The ``mppo`` argument parser (no processes started)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from mppo.cli import build_parser, main


def test_dev_up_arguments() -> None:
    args = build_parser().parse_args(["dev", "up", "--detach", "--pg-port", "0"])
    assert args.detach is True
    assert (args.pg_port, args.redis_port, args.nats_port) == (0, 6379, 4222)


def test_a_subcommand_is_required() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([])


def test_status_and_down_without_a_stack(tmp_path: Path) -> None:
    out = io.StringIO()
    assert main(["dev", "status", "--state-dir", str(tmp_path)], out) == 3
    assert main(["dev", "down", "--state-dir", str(tmp_path)], out) == 0
    assert out.getvalue().count("no stack is running") == 2
