"""The contracts are compared with a committed baseline, so a breaking change cannot pass silently.

`proto/baseline.binpb` is a `buf build` image of the released contracts; `make proto-lint` (part
of `make lint` and `make test`) runs `buf breaking` against it on every run, in a fresh clone too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / "node_modules" / ".bin" / "buf"
BASELINE = ROOT / "proto" / "baseline.binpb"

needs_buf = pytest.mark.skipif(not BUF.exists(), reason="buf comes with `make install` (npm ci)")


def buf_breaking(workspace: Path) -> subprocess.CompletedProcess[str]:
    """The check `make proto-lint` runs, in `workspace`, against the committed baseline."""
    return subprocess.run(
        [str(BUF), "breaking", "proto", "--against", str(BASELINE)],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def copy_workspace(target: Path) -> Path:
    """A copy of the buf workspace (config, our protos, vendored googleapis) to edit freely."""
    shutil.copy(ROOT / "buf.yaml", target / "buf.yaml")
    shutil.copytree(ROOT / "proto", target / "proto", ignore=shutil.ignore_patterns("*.binpb"))
    shutil.copytree(ROOT / "third_party", target / "third_party")
    return target


def test_the_baseline_is_committed_and_proto_lint_always_compares_with_it() -> None:
    assert BASELINE.stat().st_size > 0
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", "proto/baseline.binpb"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    assert tracked.returncode == 0, "proto/baseline.binpb must be committed, not built on the fly"
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^proto-lint:.*?\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe is not None
    lines = recipe.group(1).splitlines()
    assert "\t$(BUF) breaking proto --against $(CONTRACTS_BASELINE)" in lines
    assert not any("if " in line or "tag" in line for line in lines), "no condition skips it"
    assert "CONTRACTS_BASELINE := proto/baseline.binpb" in makefile
    assert re.search(r"^lint:.*\bproto-lint\b", makefile, re.MULTILINE)
    assert re.search(r"^test:.*\blint\b", makefile, re.MULTILINE)
    assert re.search(r"^contracts-baseline:", makefile, re.MULTILINE)


@needs_buf
def test_the_current_contracts_do_not_break_the_baseline() -> None:
    result = buf_breaking(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_buf
def test_a_removed_field_is_reported_against_the_baseline(tmp_path: Path) -> None:
    workspace = copy_workspace(tmp_path)
    cart = workspace / "proto" / "mppo" / "common" / "v1" / "cart.proto"
    text = cart.read_text()
    removed = re.sub(r"\n\s*string line_id = 1;", "\n", text, count=1)
    assert removed != text
    cart.write_text(removed)

    result = buf_breaking(workspace)

    assert result.returncode != 0
    assert 'name "line_id" on message "LineItem" was deleted' in result.stdout


@needs_buf
def test_an_added_field_is_not_a_break(tmp_path: Path) -> None:
    workspace = copy_workspace(tmp_path)
    cart = workspace / "proto" / "mppo" / "common" / "v1" / "cart.proto"
    text = cart.read_text()
    added = text.replace(
        "int64 unit_price_minor = 5;", "int64 unit_price_minor = 5;\n  string note = 99;"
    )
    assert added != text
    cart.write_text(added)

    assert buf_breaking(workspace).returncode == 0
