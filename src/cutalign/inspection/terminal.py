"""Rich renderables for a quick look in the terminal (the CLI prints them; nothing here prints)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cutalign.inspection.core import TokenReport
from cutalign.inspection.sweep import SweepRow


def _style(ratio: float | None, unlikely: bool) -> str:
    if ratio is None:
        return ""
    strength = max(-1.0, min(1.0, math.log(max(ratio, 1e-300)) / math.log(4)))
    colour = "red" if strength > 0.15 else "blue" if strength < -0.15 else ""
    return " ".join(p for p in (colour, "bold underline reverse" if unlikely else "") if p)


def report_panel(report: TokenReport, *, table: bool = False) -> Panel:
    """One example: instruction, judgment and the response with U highlighted (optionally every number)."""
    response = Text()
    for token in report.tokens:
        response.append(token.text or "⏎", style=_style(token.ratio, token.unlikely))
    parts: list = [Text.assemble(("Instruction: ", "bold"), report.instruction),
                   Text.assemble(("Judgment: ", "bold"), report.judgment or "(none: positive)"), response]
    if table:
        parts.append(token_table(report))
    flagged = len(report.unlikely_indices)
    title = f"{report.id or 'example'} ({'negative' if report.is_negative else 'positive'}, |U| = {flagged})"
    return Panel(Group(*parts), title=title, title_align="left")


def token_table(report: TokenReport) -> Table:
    """Every token's numbers as a table."""
    table = Table(show_edge=False, pad_edge=False)
    for name in ("#", "token", "p(t|x)", "p(t|x,j-)", "p(t|mis)", "ratio", "U", "weight"):
        table.add_column(name, justify="left" if name == "token" else "right")
    for t in report.tokens:
        table.add_row(str(t.index), repr(t.text), _num(t.p_plain), _num(t.p_judged), _num(t.p_misaligned),
                      _num(t.ratio), "●" if t.unlikely else "", _num(t.weight if t.unlikely else None))
    return table


def sweep_table(rows: Sequence[SweepRow]) -> Table:
    """|U| per threshold and, with gold spans, precision / recall / F1."""
    gold = any(r.f1 is not None for r in rows)
    table = Table(title="U per threshold")
    columns = ["lambda", "|U|", "negative tokens", "U fraction"] + (["precision", "recall", "F1"] if gold else [])
    for name in columns:
        table.add_column(name, justify="right")
    for r in rows:
        cells = [f"{r.threshold:g}", str(r.unlikely_tokens), str(r.negative_tokens), f"{r.unlikely_fraction:.3f}"]
        if gold:
            cells += [f"{r.precision:.3f}", f"{r.recall:.3f}", f"{r.f1:.3f}"]
        table.add_row(*cells)
    return table


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"
