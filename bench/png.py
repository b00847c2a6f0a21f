"""A dependency-free PNG bar chart (zlib + struct): latency percentiles per step, labelled
with a 3x5 pixel font, so the benchmark needs no plotting library."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

__all__ = ["Canvas", "latency_chart"]

Color = tuple[int, int, int]

_GLYPHS = {
    "A": "010101111101101", "B": "110101110101110", "C": "011100100100011",
    "D": "110101101101110", "E": "111100110100111", "F": "111100110100100",
    "G": "011100101101011", "H": "101101111101101", "I": "111010010010111",
    "J": "001001001101010", "K": "101101110101101", "L": "100100100100111",
    "M": "101111111101101", "N": "110101101101101", "O": "010101101101010",
    "P": "110101110100100", "Q": "010101101110011", "R": "110101110101101",
    "S": "011100010001110", "T": "111010010010010", "U": "101101101101111",
    "V": "101101101101010", "W": "101101111111101", "X": "101101010101101",
    "Y": "101101010010010", "Z": "111001010100111", "0": "111101101101111",
    "1": "010110010010111", "2": "110001010100111", "3": "110001010001110",
    "4": "101101111001001", "5": "111100110001110", "6": "011100111101111",
    "7": "111001010010010", "8": "111101111101111", "9": "111101111001110",
    ".": "000000000000010", "-": "000000111000000", ">": "100010001010100",
    "/": "001001010100100", "%": "101001010100101", ":": "000010000010000",
    "(": "010100100100010", ")": "010001001001010", "=": "000111000111000",
    ",": "000000000010100", "+": "000010111010000", " ": "000000000000000",
}  # fmt: skip


class Canvas:
    """An RGB image in memory."""

    def __init__(self, width: int, height: int, background: Color = (255, 255, 255)) -> None:
        self.width, self.height = width, height
        self.pixels = [bytearray(bytes(background) * width) for _ in range(height)]

    def rect(self, x: int, y: int, w: int, h: int, color: Color) -> None:
        for row in range(max(0, y), min(self.height, y + h)):
            x0, x1 = max(0, x), min(self.width, x + w)
            if x1 > x0:
                self.pixels[row][x0 * 3 : x1 * 3] = bytes(color) * (x1 - x0)

    def text(self, x: int, y: int, text: str, color: Color = (0, 0, 0), scale: int = 2) -> None:
        for i, char in enumerate(text.upper()):
            glyph = _GLYPHS.get(char, _GLYPHS[" "])
            for bit, on in enumerate(glyph):
                if on == "1":
                    gx, gy = bit % 3, bit // 3
                    self.rect(x + (i * 4 + gx) * scale, y + gy * scale, scale, scale, color)

    def png(self) -> bytes:
        raw = b"".join(b"\x00" + bytes(row) for row in self.pixels)

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


COLORS: tuple[Color, Color, Color] = ((76, 145, 214), (240, 160, 40), (214, 60, 60))


def latency_chart(
    path: Path, title: Sequence[str], rows: Sequence[tuple[str, float, float, float]]
) -> None:
    """Write a chart: one group of p50/p95/p99 bars (milliseconds) per labelled row."""
    label_w, bar_w, row_h = 340, 560, 34
    top = 24 + 16 * len(title) + 24
    canvas = Canvas(label_w + bar_w + 120, top + row_h * len(rows) + 20)
    for i, line in enumerate(title):
        canvas.text(10, 10 + 16 * i, line)
    legend_y = 10 + 16 * len(title) + 4
    for i, name in enumerate(("P50", "P95", "P99")):
        canvas.rect(10 + i * 90, legend_y, 14, 10, COLORS[i])
        canvas.text(30 + i * 90, legend_y, name)
    longest = max((r[3] for r in rows), default=1.0) or 1.0
    for i, (label, *values) in enumerate(rows):
        y = top + i * row_h
        canvas.text(10, y + 8, label[:40])
        for j, value in enumerate(values):
            width = max(1, int(bar_w * value / longest))
            canvas.rect(label_w, y + j * 9, width, 8, COLORS[j])
        canvas.text(label_w + max(1, int(bar_w * values[2] / longest)) + 6, y + 14,
                    f"{values[2]:.1f} MS")  # fmt: skip
    path.write_bytes(canvas.png())
