"""Counting what gets dropped, and why.

Every stage that can discard an example (loading, conversion, view building, Align-P
downsampling) records it in a :class:`DropReport` so that nothing disappears silently: the
CLI and the trainer print the same per-reason counts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

MAX_SAMPLES_PER_REASON = 5


@dataclass
class DropReport:
    """Per-reason counts of dropped examples, with a few locations per reason for debugging."""

    counts: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)

    def drop(self, reason: str, where: str | None = None) -> None:
        """Record one dropped example; ``where`` is e.g. ``"data.jsonl:12"`` or an example id."""
        self.counts[reason] += 1
        if where is not None:
            seen = self.samples.setdefault(reason, [])
            if len(seen) < MAX_SAMPLES_PER_REASON:
                seen.append(where)

    def merge(self, other: DropReport) -> DropReport:
        for reason, n in other.counts.items():
            self.counts[reason] += n
            seen = self.samples.setdefault(reason, [])
            seen.extend(other.samples.get(reason, [])[: MAX_SAMPLES_PER_REASON - len(seen)])
        return self

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))

    def lines(self) -> list[str]:
        """Human-readable lines, one per reason, e.g. ``"judge_error: 47 (e.g. f.json:3, ...)"``."""
        out = []
        for reason, n in sorted(self.counts.items()):
            where = self.samples.get(reason)
            suffix = f" (e.g. {', '.join(where)})" if where else ""
            out.append(f"{reason}: {n}{suffix}")
        return out

    def __bool__(self) -> bool:
        return self.total > 0
