"""A model's FID over checkpoints: one row per checkpoint (the mean over its evaluations, e.g. a
seed panel, with an error bar), as JSON, CSV, or a server-rendered page with an SVG plot."""

from __future__ import annotations

import csv
import html
import io
import math
from datetime import datetime, timezone
from urllib.parse import quote

import numpy as np

from fastfid._student_t import t_quantile

COLUMNS = ("checkpoint", "fid", "low", "high", "evaluations", "error_bar", "first_evaluation", "created")


def checkpoints(rows: list[dict]) -> list[dict]:
    """Per checkpoint, in the order each was first evaluated: the mean FID and a 95 % error bar, the
    spread of several evaluations (t interval of their mean), else one evaluation's jackknife
    half-width around its FID (the stored interval is centred on the bias-corrected value, which
    at small samples can lie well below the FID itself), else none."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["checkpoint"], []).append(row)
    result = []
    for checkpoint, members in groups.items():
        values = np.array([m["fid"] for m in members])
        mean = float(values.mean())
        low = high = None
        kind = "none"
        if len(values) >= 2:
            half = t_quantile(0.975, len(values) - 1) * float(values.std(ddof=1)) / math.sqrt(len(values))
            low, high, kind = mean - half, mean + half, "evaluations"
        elif members[0]["interval_low"] is not None:
            half = (members[0]["interval_high"] - members[0]["interval_low"]) / 2
            low, high, kind = mean - half, mean + half, "jackknife"
        result.append(dict(checkpoint=checkpoint, fid=mean, low=low, high=high, evaluations=len(values),
                           error_bar=kind, first_evaluation=members[0]["id"],
                           created=datetime.fromtimestamp(members[0]["created"], timezone.utc).isoformat()))
    return result


def as_csv(points: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for point in points:
        writer.writerow({key: ("" if point[key] is None else point[key]) for key in COLUMNS})
    return out.getvalue()


def page(model: str, reference: str, points: list[dict]) -> str:
    """An HTML page: the plot and the table; no script, no external resource."""
    title = f"FID of {model} against {reference}"
    data = html.escape(f"/models/{quote(model, safe='')}/history?reference={quote(reference, safe='')}")
    rows = "".join(
        f"<tr><td>{html.escape(p['checkpoint'])}</td><td>{p['fid']:.4f}</td><td>{_interval_text(p)}</td>"
        f"<td>{p['evaluations']}</td><td>{html.escape(p['created'])}</td></tr>" for p in points)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; background: #fff; }}
table {{ border-collapse: collapse; margin-top: 16px; }}
td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
{plot(points)}
<table><tr><th>checkpoint</th><th>FID</th><th>95% interval</th><th>evaluations</th><th>first evaluated</th></tr>
{rows}</table>
<p><a href="{data}&amp;format=csv">CSV</a> · <a href="{data}">JSON</a></p>
</body></html>
"""


def _interval_text(point: dict) -> str:
    return "" if point["low"] is None else f"[{point['low']:.4f}, {point['high']:.4f}]"


def plot(points: list[dict], width: int = 720, height: int = 360) -> str:
    """An SVG line of FID over checkpoints with error bars (blue #1f77b4, bars grey)."""
    if not points:
        return "<p>No evaluations yet.</p>"
    left, right, top, bottom = 70, 20, 20, 50
    lows = [p["low"] if p["low"] is not None else p["fid"] for p in points]
    highs = [p["high"] if p["high"] is not None else p["fid"] for p in points]
    y_min, y_max = min(lows), max(highs)
    pad = (y_max - y_min) * 0.1 or max(abs(y_max) * 0.1, 1.0)
    y_min, y_max = y_min - pad, y_max + pad
    if min(lows) >= 0:
        y_min = max(y_min, 0.0)  # FID is not negative: no axis below 0

    def x_of(i: int) -> float:
        return left + (width - left - right) * (0.5 if len(points) == 1 else i / (len(points) - 1))

    def y_of(v: float) -> float:
        return top + (height - top - bottom) * (y_max - v) / (y_max - y_min)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="FID over checkpoints">',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
             'fill="none" stroke="#888"/>']
    for k in range(5):
        value = y_min + (y_max - y_min) * k / 4
        parts.append(f'<text x="{left - 6}" y="{y_of(value) + 4:.1f}" font-size="11" text-anchor="end">'
                     f'{value:.3g}</text>')
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
