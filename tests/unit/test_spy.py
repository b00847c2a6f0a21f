"""The py-spy summary: samples attributed to the library of the innermost frame, our own
functions counted inclusively once per sample."""

from __future__ import annotations

from pathlib import Path

from bench.spy import library_of, summarize

SITE = "/work/main/.venv/lib/python3.11/site-packages"


def test_frames_are_attributed_to_their_library() -> None:
    assert library_of(f"{SITE}/sqlalchemy/orm/session.py") == "sqlalchemy"
    assert library_of(f"{SITE}/asyncpg/connection.py") == "asyncpg"
    assert library_of("/work/main/group_svc/service_layer/handlers.py") == "ours"
    assert library_of("/work/main/mppo/group/v1/group_pb2.py") == "protobuf"
    assert library_of("/usr/lib/python3.11/logging/__init__.py") == "logging"
    assert library_of("somewhere/else.py") == "other"


def test_summary_counts_self_and_inclusive_time(tmp_path: Path) -> None:
    raw = tmp_path / "spy.txt"
    handler = "handle (/work/main/group_svc/service_layer/handlers.py:10)"
    raw.write_text(
        f"<module> (x.py:1);{handler};execute ({SITE}/sqlalchemy/orm/session.py:5) 30\n"
        f"<module> (x.py:1);{handler};emit (/usr/lib/python3.11/logging/__init__.py:9) 10\n"
        f"<module> (x.py:1);{handler} 10\n"
        "not a stack line\n"
    )
    summary = summarize(raw)
    assert summary["samples"] == 50
    assert summary["by_library_self_percent"] == {"sqlalchemy": 60.0, "logging": 20.0, "ours": 20.0}
    (top_ours,) = summary["top_ours_inclusive"]
    assert top_ours[1:] == [50, 100.0]
    assert summary["top_self"][0][1] == 30
