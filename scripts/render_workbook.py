"""Draw the layout of infra/workbook.json as an SVG (docs/workbook-layout.svg), for the README.

Usage: python scripts/render_workbook.py [infra/workbook.json] [docs/workbook-layout.svg]

Each workbook item becomes a panel in the order and width the Portal shows it: text, the parameter
pills, tables with the columns their query projects, time charts and bar charts with their series.
Standard library only: tests/infra checks the committed picture is the one this draws.
"""

from __future__ import annotations

import json
import re
import sys
from html import escape
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 960
PAD = 16
FONT = "Segoe UI, Helvetica, Arial, sans-serif"


def _split_top(text: str) -> list[str]:
    """Split on commas outside parentheses and quotes."""
    parts, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    return [*parts, cur] if cur.strip() else parts


def _name(expr: str) -> str:
    expr = expr.strip()
    if "=" in expr.split("(")[0]:
        return expr.split("=", 1)[0].strip()
    match = re.match(r"arg_max\(\s*\w+\s*,\s*(.+)\)$", expr)
    if match:
        return ", ".join(_name(e) for e in _split_top(match.group(1)))
    return expr


def columns(query: str) -> list[str]:
    """The columns a query's result has: its last project, or its last summarize (aggregates, then by)."""
    stages = [s.strip() for s in query.split("\n|")]
    for stage in reversed(stages):
        if stage.startswith("project "):
            return [_name(e) for e in _split_top(stage[len("project "):])]
        if stage.startswith("summarize "):
            body = stage[len("summarize "):]
            aggregates, _, by = body.partition(" by ")
            names = [n for e in _split_top(aggregates) for n in _name(e).split(", ")]
            keys = [_name(e) for e in _split_top(by)] if by else []
            return [k for k in keys if not k.startswith("bin(")] + names
    return []


def _text(x: float, y: float, s: str, size: int = 12, weight: str = "normal", fill: str = "#323130",
          anchor: str = "start") -> str:
    return (f'<text x="{x:.0f}" y="{y:.0f}" font-family="{FONT}" font-size="{size}" font-weight="{weight}" '
            f'fill="{fill}" text-anchor="{anchor}">{escape(s)}</text>')


def _panel(y: float, height: float, title: str) -> list[str]:
    out = [f'<rect x="{PAD}" y="{y:.0f}" width="{WIDTH - 2 * PAD}" height="{height:.0f}" rx="4" '
           f'fill="#ffffff" stroke="#d2d0ce"/>']
    if title:
        out.append(_text(PAD + 12, y + 22, title, 14, "600"))
    return out


def _markdown(y: float, item: dict[str, Any]) -> tuple[list[str], float]:
    lines = [ln for ln in item["content"]["json"].splitlines() if ln.strip()]
    title = lines[0].lstrip("# ") if lines and lines[0].startswith("#") else ""
    plain = re.sub(r"\*([^*\s][^*]*[^*\s])\*", r"\1", " ".join(lines[1:] if title else lines).replace("`", ""))
    words, rows, cur = plain.split(), [], ""
    for w in words:
        if len(cur) + len(w) > 128:
            rows.append(cur)
            cur = ""
        cur = f"{cur} {w}".strip()
    rows += [cur] if cur else []
    height = 34 + 16 * len(rows)
    out = _panel(y, height, title)
    out += [_text(PAD + 12, y + 44 + 16 * i, r, 11, fill="#605e5c") for i, r in enumerate(rows)]
    return out, height


def _parameters(y: float, item: dict[str, Any]) -> tuple[list[str], float]:
    out = _panel(y, 40, "")
    x = PAD + 12
    for p in item["content"]["parameters"]:
        label = f'{p.get("label", p["name"])}: {p.get("value", {}).get("durationMs", 0) // 86_400_000} days'
        w = 8 * len(label) + 20
        out.append(f'<rect x="{x}" y="{y + 8:.0f}" width="{w}" height="24" rx="12" fill="#deecf9" stroke="#0078d4"/>')
        out.append(_text(x + w / 2, y + 24, label, 12, fill="#0078d4", anchor="middle"))
        x += w + 8
    return out, 40


def _query(y: float, item: dict[str, Any]) -> tuple[list[str], float]:
    content = item["content"]
    viz, query = content.get("visualization", "table"), content["query"]
    cols = columns(query)
    source = query.split("\n", 1)[0].strip()
    height = 150.0
    out = _panel(y, height, content["title"])
    out.append(_text(WIDTH - PAD - 12, y + 22, f"{viz} · {source}", 11, fill="#8a8886", anchor="end"))
    top, left, right = y + 36, PAD + 12, WIDTH - PAD - 12
    if viz == "table":
        width = (right - left) / max(1, len(cols))
        out.append(f'<rect x="{left}" y="{top:.0f}" width="{right - left}" height="22" fill="#f3f2f1"/>')
        for i, c in enumerate(cols):
            out.append(_text(left + 6 + i * width, top + 15, c, 11, "600"))
            for r in range(4):
                out.append(f'<rect x="{left + 6 + i * width:.0f}" y="{top + 32 + r * 20:.0f}" '
                           f'width="{width * 0.6:.0f}" height="8" rx="2" fill="#edebe9"/>')
        if "thresholdsGrid" in json.dumps(content.get("gridSettings", {})):
            for r, color in enumerate(("#e81123", "#fce100", "#107c10", "#107c10")):
                out.append(f'<circle cx="{right - 14}" cy="{top + 36 + r * 20:.0f}" r="5" fill="{color}"/>')
    else:
        key, values = (cols[0], cols[1:]) if cols else ("series", [])
        base = top + 96
        out.append(f'<line x1="{left}" y1="{base}" x2="{right - 200}" y2="{base}" stroke="#8a8886"/>')
        if viz == "timechart":
            for k, color in enumerate(("#0078d4", "#e81123", "#107c10")):
                pts = " ".join(f"{left + i * 40:.0f},{base - 20 - 25 * abs(((i + 3 * k) % 7) - 3) / 3 - 12 * k:.0f}"
                               for i in range(int((right - 200 - left) / 40) + 1))
                out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        else:
            for i in range(6):
                h = 20 + (i * 37) % 60
                out.append(f'<rect x="{left + 20 + i * 110}" y="{base - h}" width="60" height="{h}" fill="#0078d4"/>')
        out.append(_text(right - 190, top + 20, f"by {key}", 11, "600", fill="#605e5c"))
        for i, c in enumerate(values):
            out.append(_text(right - 190, top + 40 + 16 * i, f"• {c}", 11, fill="#605e5c"))
    return out, height


def render(workbook: dict[str, Any], title: str = "APIM gateway token rotation (workbook)") -> str:
    body: list[str] = []
    y = 52.0
    for item in workbook["items"]:
        kind = item["type"]
        drawn, height = (_markdown(y, item) if kind == 1 else _parameters(y, item) if kind == 9
                         else _query(y, item) if kind == 3 else ([], 0.0))
        body += drawn
        y += height + 10 if drawn else 0
    total = y + PAD
    head = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{total:.0f}" '
            f'viewBox="0 0 {WIDTH} {total:.0f}">',
            f'<rect width="{WIDTH}" height="{total:.0f}" fill="#faf9f8"/>',
            f'<rect width="{WIDTH}" height="40" fill="#0078d4"/>',
            _text(PAD, 26, title, 16, "600", "#ffffff"),
            _text(WIDTH - PAD, 26, "Application Insights › Workbooks", 12, fill="#ffffff", anchor="end")]
    return "\n".join([*head, *body, "</svg>"]) + "\n"


def main(argv: list[str]) -> None:
    source = Path(argv[0]) if argv else ROOT / "infra" / "workbook.json"
    target = Path(argv[1]) if len(argv) > 1 else ROOT / "docs" / "workbook-layout.svg"
    target.write_text(render(json.loads(source.read_text(encoding="utf-8"))), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
