"""A model's FID over checkpoints: one row per checkpoint (the mean over its evaluations, e.g. a
seed panel, with an error bar), as JSON, CSV, or a server-rendered page with an SVG plot."""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Iterable
from datetime import datetime, timezone
from urllib.parse import quote

from fastfid._student_t import t_quantile
from fastfid.service import pages

COLUMNS = ("checkpoint", "fid", "low", "high", "evaluations", "error_bar", "first_evaluation", "created")


class _Checkpoint:
    """One checkpoint's evaluations as they stream by: its first row, and the count, mean and sum of
    squared deviations of their FIDs (Welford's update: no list of rows, no cancellation)."""

    def __init__(self, first: dict):
        self.first, self.count, self.mean, self.squares = first, 0, 0.0, 0.0

    def add(self, fid: float) -> None:
        self.count += 1
        step = fid - self.mean
        self.mean += step / self.count
        self.squares += step * (fid - self.mean)


def checkpoints(rows: Iterable[dict]) -> list[dict]:
    """Per checkpoint, in the order each was first evaluated: the mean FID and a 95 % error bar, the
    spread of several evaluations (t interval of their mean), else one evaluation's jackknife
    half-width around its FID (the stored interval is centred on the bias-corrected value, which
    at small samples can lie well below the FID itself), else none. ``rows`` may stream (oldest
    first): memory grows with the checkpoints, not the evaluations."""
    groups: dict[str, _Checkpoint] = {}
    for row in rows:
        group = groups.get(row["checkpoint"])
        if group is None:
            group = groups[row["checkpoint"]] = _Checkpoint(row)
        group.add(row["fid"])
    result = []
    for checkpoint, group in groups.items():
        first, mean = group.first, group.mean
        low = high = None
        kind = "none"
        if group.count >= 2:
            spread = math.sqrt(group.squares / (group.count - 1))
            half = t_quantile(0.975, group.count - 1) * spread / math.sqrt(group.count)
            low, high, kind = mean - half, mean + half, "evaluations"
        elif first["interval_low"] is not None:
            half = (first["interval_high"] - first["interval_low"]) / 2
            low, high, kind = mean - half, mean + half, "jackknife"
        result.append(dict(checkpoint=checkpoint, fid=mean, low=low, high=high, evaluations=group.count,
                           error_bar=kind, first_evaluation=first["id"],
                           created=datetime.fromtimestamp(first["created"], timezone.utc)
                           .isoformat(timespec="seconds")))
    return result


def as_csv(points: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for point in points:
        writer.writerow({key: _cell(point[key]) for key in COLUMNS})
    return out.getvalue()


def _cell(value):
    """A text cell that a spreadsheet would run as a formula (=, +, -, @, tab, CR first) is quoted
    with a leading apostrophe, which spreadsheets show as text; numbers are written as they are."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def page(model: str, reference: str, points: list[dict], *, signed_in: bool = False) -> str:
    """An HTML page: the plot, what its bars are, and the table."""
    title = f"FID of {model} against {reference}"
    data = html.escape(f"/models/{quote(model, safe='')}/history?reference={quote(reference, safe='')}")
    rows = "".join(
        f'<tr><td class="name">{html.escape(p["checkpoint"])}</td><td>{p["fid"]:.4f}</td><td>{_interval_text(p)}</td>'
        f'<td>{p["evaluations"]}</td><td>{pages.timestamp(p["created"])}</td></tr>'
        for p in points)
    body = f"""{plot(points)}
<p class="note">{html.escape(bar_explanation(points))}</p>
<table><tr><th class="name">checkpoint</th><th>FID</th><th>95% interval</th><th>evaluations</th>
<th>first evaluated</th></tr>
{rows}</table>
<p><a href="{data}&amp;format=csv">CSV</a> · <a href="{data}">JSON</a></p>"""
    return pages.document(title, body, signed_in=signed_in)


def bar_explanation(points: list[dict]) -> str:
    """One line under the plot per kind of bar it shows."""
    kinds = {p["error_bar"] for p in points}
    lines = []
    if "evaluations" in kinds:
        lines.append("Bars: 95 % interval of the checkpoint's mean over its evaluations (t with n − 1 degrees "
                     "of freedom).")
    if "jackknife" in kinds:
        lines.append("Bars of a checkpoint evaluated once: its jackknife 95 % half-width, around its FID.")
    if "none" in kinds:
        lines.append("No bar: a single evaluation without error bars.")
    return " ".join(lines)


def round_ticks(low: float, high: float, most: int = 7) -> tuple[list[float], int]:
    """Axis ticks at multiples of 1, 2, 2.5 or 5 × 10^k covering [low, high] (at most ``most`` of
    them), and the decimals that print them exactly."""
    span = max(high - low, abs(high) * 1e-9, 1e-12)
    for power in range(math.floor(math.log10(span / most)), math.ceil(math.log10(span)) + 2):
        for mantissa in (1.0, 2.0, 2.5, 5.0):
            step = mantissa * 10.0 ** power
            first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
            if last - first + 1 <= most:
                decimals = max(0, -power + (1 if mantissa == 2.5 else 0))
                return [round(k * step, decimals + 1) for k in range(first, last + 1)], decimals
    return [low, high], 3  # not reached: the largest step covers the span in two ticks


def _interval_text(point: dict) -> str:
    return "" if point["low"] is None else f"[{point['low']:.4f}, {point['high']:.4f}]"


def plot(points: list[dict], width: int = 720, height: int = 360) -> str:
    """An SVG line of FID over checkpoints with error bars (blue #1f77b4, bars grey)."""
    if not points:
        return "<p>No evaluations yet.</p>"
    left, right, top, bottom = 70, 20, 20, 50
    inset = 24  # the first and last points and their whiskers stay inside the frame
    lows = [p["low"] if p["low"] is not None else p["fid"] for p in points]
    highs = [p["high"] if p["high"] is not None else p["fid"] for p in points]
    y_min, y_max = min(lows), max(highs)
    pad = (y_max - y_min) * 0.05 or max(abs(y_max) * 0.1, 1.0)
    y_min, y_max = y_min - pad, y_max + pad
    if min(lows) >= 0:
        y_min = max(y_min, 0.0)  # FID is not negative: no axis below 0
    ticks, decimals = round_ticks(y_min, y_max)
    y_min, y_max = ticks[0], ticks[-1]

    def x_of(i: int) -> float:
        span = width - left - right - 2 * inset
        return left + inset + span * (0.5 if len(points) == 1 else i / (len(points) - 1))

    def y_of(v: float) -> float:
        return top + (height - top - bottom) * (y_max - v) / (y_max - y_min)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="FID over checkpoints">',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
             'fill="none" stroke="#888"/>']
    for value in ticks:
        parts.append(f'<text x="{left - 6}" y="{y_of(value) + 4:.1f}" font-size="11" text-anchor="end">'
                     f'{value:.{decimals}f}</text>')
        parts.append(f'<line x1="{left - 3}" y1="{y_of(value):.1f}" x2="{left}" y2="{y_of(value):.1f}" stroke="#888"/>')
    for i, p in enumerate(points):
        x = x_of(i)
        if p["low"] is not None:
            parts.append(f'<line x1="{x:.1f}" y1="{y_of(p["low"]):.1f}" x2="{x:.1f}" y2="{y_of(p["high"]):.1f}" '
                         'stroke="#777" stroke-width="2"/>')
            parts += [f'<line x1="{x - 6:.1f}" y1="{y_of(v):.1f}" x2="{x + 6:.1f}" y2="{y_of(v):.1f}" '
                      'stroke="#777" stroke-width="2"/>' for v in (p["low"], p["high"])]
        parts.append(f'<text x="{x:.1f}" y="{height - bottom + 18}" font-size="11" text-anchor="middle">'
                     f'{html.escape(p["checkpoint"])}</text>')
    line = " ".join(f"{x_of(i):.1f},{y_of(p['fid']):.1f}" for i, p in enumerate(points))
    parts.append(f'<polyline points="{line}" fill="none" stroke="#1f77b4" stroke-width="3"/>')
    parts += [f'<circle cx="{x_of(i):.1f}" cy="{y_of(p["fid"]):.1f}" r="5" fill="#1f77b4"/>'
              for i, p in enumerate(points)]
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 8}" font-size="12" '
                 'text-anchor="middle">checkpoint</text>')
    parts.append(f'<text x="16" y="{(top + height - bottom) / 2}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 16 {(top + height - bottom) / 2})">FID</text>')
    parts.append("</svg>")
    return "\n".join(parts)
