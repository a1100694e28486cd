"""Judge interfaces: a batch of (prompt, completion) -> `Judgment`; pairs -> `Preference`.

A judge never guesses: a reply it cannot parse is returned with its raw text and
`error="unparseable"`, and a call that failed with `error` set to its kind, so callers count
them and never train on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

Prompt = str | list[dict[str, str]]


@dataclass
class Judgment:
    """What a judge said about one completion.

    `text` is the judgment (None when the judge found the response satisfactory and said nothing
    more); `satisfactory` the polarity (None when unknown, e.g. on error); `score` an optional
    scalar; `raw` the judge's full reply; `error` None, "unparseable", or a failure kind.
    """

    text: str | None
    satisfactory: bool | None
    score: float | None = None
    raw: str = ""
    error: str | None = None
    error_spans: list[tuple[int, int]] | None = None  # gold character spans, for programmatic judges

    @property
    def ok(self) -> bool:
        return self.error is None and self.satisfactory is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Preference:
    """A pairwise verdict: `winner` is "a", "b" or "tie" (None on error), in the caller's order."""

    winner: str | None
    raw: str = ""
    error: str | None = None


@runtime_checkable
class Judge(Protocol):
    """Judges a batch; one `Judgment` per (prompt, completion), in input order."""

    name: str

    def judge(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[Judgment]: ...


@runtime_checkable
class PairwiseJudge(Protocol):
    """Compares two completions per prompt; callers cancel position bias by asking both orders."""

    name: str

    def judge_pairs(self, prompts: Sequence[Prompt], a: Sequence[str], b: Sequence[str]) -> list[Preference]: ...
