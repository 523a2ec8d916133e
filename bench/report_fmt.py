"""Formatting shared by the report's sections: tables, medians with their spread, verdicts."""

from __future__ import annotations

from collections.abc import Sequence

from bench.measure import Timed, median

MiB = 1 << 20


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def profile_table(rows: Sequence[tuple[str, int, float, float]], *, ms: bool) -> list[str]:
    """cProfile rows (function, calls, own s, cumulative s) as a table, in s or in ms."""

    def t(v: float) -> str:
        return f"{v * 1000:.1f} ms" if ms else f"{v:.3f} s"

    body = [[f"`{f}`", str(c), t(own), t(cu)] for f, c, own, cu in rows]
    return table(["function", "calls", "own", "cumulative"], body)


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def walls(ts: Sequence[Timed]) -> list[float]:
    return [t.wall for t in ts]


def wall(ts: Sequence[Timed]) -> float:
    return median(walls(ts))


def cpu(ts: Sequence[Timed]) -> float:
    return median([t.user + t.sys for t in ts])


def rss(ts: Sequence[Timed]) -> float:
    """Peak RSS (MiB), the highest of the reps."""
    return max((t.maxrss_kib for t in ts), default=0) / 1024


def spread(values: Sequence[float], unit: str = "s", digits: int = 3, scale: float = 1.0) -> str:
    """``median unit (min-max)``; "-" when there is nothing."""
    if not values:
        return "-"
    v = [x * scale for x in values]
    return f"{median(v):.{digits}f} {unit} ({min(v):.{digits}f}-{max(v):.{digits}f})"


def ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """The median of ``a`` over the median of ``b`` (what each target is stated in)."""
    return median(a) / median(b) if a and b else float("nan")


def paired(a: Sequence[float], b: Sequence[float]) -> str:
    """min-max of the per-rep ratios a[i]/b[i] (reps interleaved, so rep i pairs up)."""
    rs = [x / y for x, y in zip(a, b, strict=False) if y > 0]
    return f"{min(rs):.2f}-{max(rs):.2f}" if rs else "-"
