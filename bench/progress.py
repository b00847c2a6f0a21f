"""A one-line progress bar on stderr (redrawn at most 5 times a second)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from bench.load import LoadResult

__all__ = ["Progress"]


class Progress:
    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label, self.total = label, total
        self.stream = stream or sys.stderr
        self.began = time.perf_counter()
        self._drawn = 0.0

    def _draw(self, done: int, extra: str) -> None:
        now = time.perf_counter()
        if now - self._drawn < 0.2 and done < self.total:
            return
        self._drawn = now
        width = 30
        filled = int(width * min(done, self.total) / max(1, self.total))
        rate = done / max(now - self.began, 1e-9)
        self.stream.write(
            f"\r{self.label:<18} [{'#' * filled}{'.' * (width - filled)}] "
            f"{done}/{self.total} {rate:6.2f}/s {extra}"
        )
        self.stream.flush()

    def update(self, result: LoadResult) -> None:
        """Checkouts finished so far (completed or failed)."""
        errors = sum(result.errors.values())
        self._draw(result.completed + errors, f"errors {errors}  ")

    def update_count(self, done: int) -> None:
        self._draw(done, "")

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()
