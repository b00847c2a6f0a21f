"""Copy the googleapis protos our contracts import from the googleapis-common-protos wheel.

buf resolves imports offline from `third_party/googleapis`; the files come from the pinned
wheel so they always match the Python modules the services import at run time.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import google.api

FILES = (
    "google/api/annotations.proto",
    "google/api/http.proto",
    "google/api/httpbody.proto",
    "google/rpc/status.proto",
    "google/rpc/code.proto",
    "google/rpc/error_details.proto",
)


def main() -> int:
    """Copy FILES into third_party/googleapis, replacing what is there."""
    site = Path(next(iter(google.api.__path__))).parent.parent
    dest = Path(__file__).resolve().parent.parent / "third_party" / "googleapis"
    for rel in FILES:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(site / rel, target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
