"""Generate the typed Python stubs and the gateway's descriptor set from proto/.

One command for all generated code (STYLE.md §9):

    python scripts/gen_protos.py          # write the stubs and gateway/descriptors.binpb
    python scripts/gen_protos.py --check  # fail if the committed files differ from a fresh build

Stubs come from grpcio-tools' protoc with the mypy-protobuf plugins, so they type-check
under mypy --strict. The descriptor set includes imports and source info (comments), which
Envoy's grpc_json_transcoder and our Python gateway both read.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
GOOGLEAPIS_DIR = ROOT / "third_party" / "googleapis"
DESCRIPTOR_SET = Path("gateway") / "descriptors.binpb"
GENERATED_PACKAGE = Path("mppo")
INIT_TEXT = '"""Generated from proto/ by scripts/gen_protos.py; do not edit."""\n'


def proto_files() -> list[str]:
    """Every .proto file of ours, relative to proto/, in a stable order."""
    return sorted(p.relative_to(PROTO_DIR).as_posix() for p in PROTO_DIR.rglob("*.proto"))


def generate(out: Path) -> None:
    """Run protoc once for every file, writing the stubs and descriptor set below `out`."""
    files = proto_files()
    wkt_dir = resources.files("grpc_tools") / "_proto"
    (out / DESCRIPTOR_SET).parent.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTO_DIR}",
        f"-I{GOOGLEAPIS_DIR}",
        f"-I{wkt_dir}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out=quiet:{out}",
        f"--mypy_grpc_out=quiet:{out}",
        f"--descriptor_set_out={out / DESCRIPTOR_SET}",
        "--include_imports",
        "--include_source_info",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for package_dir in {(out / f).parent for f in files}:
        directory = package_dir
        while directory != out / GENERATED_PACKAGE:
            init = directory / "__init__.py"
            if not init.exists():
                init.write_text(INIT_TEXT)
            directory = directory.parent


def generated_files(base: Path) -> set[Path]:
    """The generated files below `base`, relative to it."""
    found = {DESCRIPTOR_SET} if (base / DESCRIPTOR_SET).exists() else set()
    for area in sorted({f.split("/")[1] for f in proto_files()}):
        area_dir = base / GENERATED_PACKAGE / area
        if area_dir.exists():
            found |= {
                p.relative_to(base)
                for p in area_dir.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts
            }
    return found


def check() -> int:
    """Compare a fresh build with the working tree; report every stale or missing file."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        expected, actual = generated_files(fresh), generated_files(ROOT)
        stale = sorted(
            str(rel)
            for rel in expected
            if rel not in actual or not filecmp.cmp(fresh / rel, ROOT / rel, shallow=False)
        )
        extra = sorted(str(rel) for rel in actual - expected)
    for rel in stale:
        sys.stderr.write(f"stale or missing generated file: {rel}\n")
    for rel in extra:
        sys.stderr.write(f"generated file with no proto source: {rel}\n")
    if stale or extra:
        sys.stderr.write("run `make gen` and commit the result\n")
        return 1
    return 0


def write() -> int:
    """Regenerate in place, removing generated files whose proto is gone."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        for rel in generated_files(ROOT) - generated_files(fresh):
            (ROOT / rel).unlink()
        for rel in generated_files(fresh):
            (ROOT / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fresh / rel, ROOT / rel)
    return 0


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if generated files are stale")
    return check() if parser.parse_args().check else write()


if __name__ == "__main__":
    sys.exit(main())
