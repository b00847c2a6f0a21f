"""The split calculator: divides a group total into per-member shares in minor units.

Every mode reduces to one rule, the largest-remainder method over exact rational weights:
each member first gets ``floor(total * w_i / W)``; the units left over go one each to the
members with the largest fractional parts, ties broken by join order (earlier first). So
shares are integers, never negative, sum exactly to the total, and the same input always
gives the same output.

* EQUAL — every weight is 1 (shares differ by at most one minor unit).
* CUSTOM — the amounts are given and must sum to the total.
* WEIGHTED — positive integer weights.
* PERCENTAGE — basis points summing to 10000.
* ITEMIZED — a member's weight is their spend: each cart line's cost is divided equally
  among the members who name it (a line named by nobody is shared by everyone). Fees, tax
  and tip are then spread in proportion to spend, which is the same as scaling every spend
  by ``total / items_total`` — one rounding step for the whole thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction

from mppo.platform.errors import FieldViolation, InvalidArgumentError

BASIS_POINTS_TOTAL = 10_000


class SplitMode(StrEnum):
    """How the total is divided."""

    EQUAL = "EQUAL"
    CUSTOM = "CUSTOM"
    WEIGHTED = "WEIGHTED"
    PERCENTAGE = "PERCENTAGE"
    ITEMIZED = "ITEMIZED"


@dataclass(frozen=True)
class ShareSpec:
    """One member's split parameter; which field applies depends on the mode."""

    amount_minor: int | None = None
    weight: int | None = None
    basis_points: int | None = None
    line_ids: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Line:
    """A cart line as the calculator sees it."""

    line_id: str
    cost_minor: int


def largest_remainder(total: int, weights: Sequence[Fraction | int]) -> list[int]:
    """Shares of `total` proportional to `weights` (non-negative, not all zero)."""
    if total < 0:
        raise ValueError("total must not be negative")
    exact = [Fraction(w) for w in weights]
    if any(w < 0 for w in exact):
        raise ValueError("weights must not be negative")
    weight_sum = sum(exact, Fraction(0))
    if weight_sum == 0:
        raise ValueError("weights must not all be zero")
    quotas = [total * w / weight_sum for w in exact]
    shares = [q.numerator // q.denominator for q in quotas]
    left = total - sum(shares)
    # largest fractional part first; the earlier member wins a tie
    order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - shares[i]), i))
    for i in order[:left]:
        shares[i] += 1
    return shares


def _invalid(message: str, violations: list[FieldViolation]) -> InvalidArgumentError:
    return InvalidArgumentError(message, violations, reason="INVALID_SPLIT")


def compute_shares(
    mode: SplitMode,
    total: int,
    specs: Sequence[ShareSpec],
    lines: Sequence[Line] = (),
    labels: Sequence[str] | None = None,
) -> list[int]:
    """The share of each member (in join order) of `total` under `mode`.

    `labels` name each member's share parameter in error details (default ``shares[i]``).
    Raises InvalidArgumentError with field violations for bad parameters.
    """
    if not specs:
        raise _invalid("a group needs at least one member", [FieldViolation("members", "empty")])
    names = list(labels) if labels is not None else [f"shares[{i}]" for i in range(len(specs))]
    if mode is SplitMode.EQUAL:
        return largest_remainder(total, [1] * len(specs))
    if mode is SplitMode.CUSTOM:
        return _custom(total, specs, names)
    if mode is SplitMode.WEIGHTED:
        return _weighted(total, specs, names)
    if mode is SplitMode.PERCENTAGE:
        return _percentage(total, specs, names)
    return _itemized(total, specs, lines, names)


def _custom(total: int, specs: Sequence[ShareSpec], names: Sequence[str]) -> list[int]:
    bad = [
        FieldViolation(f"{name}.amount_minor", "required, zero or more")
        for name, spec in zip(names, specs, strict=True)
        if spec.amount_minor is None or spec.amount_minor < 0
    ]
    if bad:
        raise _invalid("custom shares need a non-negative amount per member", bad)
    amounts = [spec.amount_minor or 0 for spec in specs]
    if sum(amounts) != total:
        raise _invalid(
            f"custom shares sum to {sum(amounts)}, the total is {total}",
            [FieldViolation("shares", f"must sum to the total {total}")],
        )
    return amounts


def _weighted(total: int, specs: Sequence[ShareSpec], names: Sequence[str]) -> list[int]:
    bad = [
        FieldViolation(f"{name}.weight", "required, a positive integer")
        for name, spec in zip(names, specs, strict=True)
        if spec.weight is None or spec.weight <= 0
    ]
    if bad:
        raise _invalid("weighted shares need a positive weight per member", bad)
    return largest_remainder(total, [spec.weight or 0 for spec in specs])


def _percentage(total: int, specs: Sequence[ShareSpec], names: Sequence[str]) -> list[int]:
    bad = [
        FieldViolation(f"{name}.basis_points", f"required, 0 to {BASIS_POINTS_TOTAL}")
        for name, spec in zip(names, specs, strict=True)
        if spec.basis_points is None or not 0 <= spec.basis_points <= BASIS_POINTS_TOTAL
    ]
    if bad:
        raise _invalid("percentage shares need basis points per member", bad)
    points = [spec.basis_points or 0 for spec in specs]
    if sum(points) != BASIS_POINTS_TOTAL:
        raise _invalid(
            f"basis points sum to {sum(points)}",
            [FieldViolation("shares", f"basis points must sum to {BASIS_POINTS_TOTAL}")],
        )
    return largest_remainder(total, points)


def _itemized(
    total: int, specs: Sequence[ShareSpec], lines: Sequence[Line], names: Sequence[str]
) -> list[int]:
    known = {line.line_id for line in lines}
    bad = [
        FieldViolation(f"{name}.line_ids", f"unknown line {line_id!r}")
        for name, spec in zip(names, specs, strict=True)
        for line_id in spec.line_ids
        if line_id not in known
    ]
    if bad:
        raise _invalid("itemized shares name lines that are not in the cart", bad)
    spend = [Fraction(0)] * len(specs)
    for line in lines:
        owners = [i for i, spec in enumerate(specs) if line.line_id in spec.line_ids]
        owners = owners or list(range(len(specs)))
        for i in owners:
            spend[i] += Fraction(line.cost_minor, len(owners))
    if sum(spend, Fraction(0)) == 0:
        return largest_remainder(total, [1] * len(specs))
    return largest_remainder(total, spend)
