"""Counting what happened to the data: drops, intentional selections, and notices.

Every stage that can discard an example (loading, conversion, view building, Align-P
downsampling) records it in a :class:`DropReport` so that nothing disappears silently: the
CLI, the trainer and the model card print the same per-reason counts. Three kinds are kept apart:

- *drops*: examples that could not be used (``judge_error``, ``response_too_long``, ...);
- *selections*: examples left out on purpose by the method (``positive_downsampled``: Align-P
  downsampling; ``negative_excluded``: SFT trains on positives only) -- not a data problem;
- *notices*: kept examples worth a word (different examples sharing an id, a response that had to
  be tokenised apart from its prompt).

``counts`` holds drops and selections (every example that did not reach training), so
``kept + report.total`` is the number of examples read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

MAX_SAMPLES_PER_REASON = 5
# Reasons that are the method's choice, not a defect of the data.
SELECTION_REASONS = frozenset({"positive_downsampled", "negative_excluded"})
# How :meth:`DropReport.describe` words a reason: (one, several); others read as the reason itself.
_PHRASES = {
    "judge_error": ("judge error", "judge errors"),
    "response_too_long": ("too long", "too long"),
    "duplicate": ("duplicate", "duplicates"),
    "positive_downsampled": ("positive downsampled", "positives downsampled"),
    "negative_excluded": ("negative excluded", "negatives excluded"),
}


def _add_sample(samples: dict[str, list[str]], reason: str, where: str | None) -> None:
    seen = samples.setdefault(reason, [])
    if where is not None and len(seen) < MAX_SAMPLES_PER_REASON:
        seen.append(where)


@dataclass
class DropReport:
    """Per-reason counts of examples removed (drops and selections) and of notices, with a few
    locations per reason for debugging, and the sources the data came from."""

    counts: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)
    notices: Counter[str] = field(default_factory=Counter)
    notice_samples: dict[str, list[str]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    # Why a selection was made, e.g. "to 0.25 × negatives", shown after its count.
    selection_notes: dict[str, str] = field(default_factory=dict)

    def drop(self, reason: str, where: str | None = None) -> None:
        """Record one removed example; ``where`` is e.g. ``"data.jsonl:12"`` or an example id.
        Reasons in :data:`SELECTION_REASONS` count as selections, the others as drops."""
        self.counts[reason] += 1
        _add_sample(self.samples, reason, where)

    def notice(self, kind: str, where: str | None = None) -> None:
        """Record something about a *kept* example that the user should know."""
        self.notices[kind] += 1
        _add_sample(self.notice_samples, kind, where)

    def add_source(self, source: str) -> None:
        if source not in self.sources:
            self.sources.append(source)

    def merge(self, other: DropReport) -> DropReport:
        for mine, theirs, samples, their_samples in (
            (self.counts, other.counts, self.samples, other.samples),
            (self.notices, other.notices, self.notice_samples, other.notice_samples),
        ):
            for reason, n in theirs.items():
                mine[reason] += n
                seen = samples.setdefault(reason, [])
                seen.extend(their_samples.get(reason, [])[: MAX_SAMPLES_PER_REASON - len(seen)])
        for source in other.sources:
            self.add_source(source)
        self.selection_notes.update(other.selection_notes)
        return self

    @property
    def total(self) -> int:
        """Every example that did not reach training: drops and selections."""
        return sum(self.counts.values())

    @property
    def dropped(self) -> int:
        """Examples that could not be used (selections not included)."""
        return sum(n for reason, n in self.counts.items() if reason not in SELECTION_REASONS)

    def as_dict(self) -> dict[str, int]:
        """Drops and selections by reason (see :meth:`drops` and :meth:`selections` for either)."""
        return dict(sorted(self.counts.items()))

    def drops(self) -> dict[str, int]:
        return {r: n for r, n in sorted(self.counts.items()) if r not in SELECTION_REASONS}

    def selections(self) -> dict[str, int]:
        return {r: n for r, n in sorted(self.counts.items()) if r in SELECTION_REASONS}

    def notices_dict(self) -> dict[str, int]:
        return dict(sorted(self.notices.items()))

    def to_json(self) -> dict[str, object]:
        """Everything, for summaries and model cards."""
        return {"dropped": self.drops(), "selected_out": self.selections(), "notices": self.notices_dict(),
                "sources": list(self.sources)}

    def describe(self, kept: int) -> str:
        """One line, e.g. ``kept 298 of 1000 (47 judge errors, 1 too long, 654 positives downsampled
        to 0.25 × negatives)``; ``kept`` is the number of examples that remain."""
        parts = []
        for reason, n in sorted(self.counts.items(), key=lambda item: (item[0] in SELECTION_REASONS, -item[1])):
            one, several = _PHRASES.get(reason, (reason, reason))
            phrase = one if n == 1 else several
            note = self.selection_notes.get(reason)
            parts.append(f"{n} {phrase}" + (f" {note}" if note else ""))
        detail = f" ({', '.join(parts)})" if parts else ""
        return f"kept {kept} of {kept + self.total}{detail}"

    def lines(self) -> list[str]:
        """Human-readable lines, one per reason, e.g. ``"judge_error: 47 (e.g. f.json:3, ...)"``;
        selections are marked as such, notices prefixed ``notice``."""
        out = []
        for reason, n in sorted(self.counts.items()):
            where = self.samples.get(reason)
            kind = " (intentional)" if reason in SELECTION_REASONS else ""
            suffix = f" (e.g. {', '.join(where)})" if where else ""
            out.append(f"{reason}{kind}: {n}{suffix}")
        for kind, n in sorted(self.notices.items()):
            where = self.notice_samples.get(kind)
            suffix = f" (e.g. {', '.join(where)})" if where else ""
            out.append(f"notice {kind}: {n}{suffix}")
        return out

    def __bool__(self) -> bool:
        return self.total > 0

