"""Stop a run whose judge keeps failing, rather than filling the output with errors.

A judge that is down, rate-limited for good, or replying in the wrong format costs time (and money)
on every row while producing nothing usable. `FailureGuard` watches the results as they arrive and
raises `JudgeFailureError` after too many consecutive failures, or when the failure rate is too
high once a warm-up has passed. Every result, good or bad, is still counted by the caller.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from cutalign.judges.base import Judgment, Preference

# Failures that say nothing about the row: the request may succeed later (and was not paid for).
TRANSIENT_ERRORS = ("rate_limited", "server_error", "timeout", "connection", "malformed_response")


class JudgeFailureError(RuntimeError):
    """The judge failed too often; the message says how, and what the rerun will do."""


@dataclass
class FailureGuard:
    """Trips after `max_consecutive` failures in a row (0: never), or when more than `max_error_rate`
    of the results are failures after `warmup` results (a rate >= 1 disables the test)."""

    max_consecutive: int = 10
    max_error_rate: float = 0.5
    warmup: int = 20
    seen: int = 0
    failures: int = 0
    consecutive: int = 0
    kinds: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.max_consecutive < 0:
            raise ValueError(f"max_consecutive must be >= 0, got {self.max_consecutive}")
        if self.max_error_rate <= 0:
            raise ValueError(f"max_error_rate must be > 0, got {self.max_error_rate}")

    def observe(self, results: Iterable[Judgment | Preference]) -> None:
        """Count `results` (in order); raise `JudgeFailureError` when the judge must be stopped."""
        for result in results:
            self.seen += 1
            error = result.error if isinstance(result, Preference) else (
                result.error or ("unparseable" if result.satisfactory is None else None))
            if error is None:
                self.consecutive = 0
                continue
            self.failures += 1
            self.consecutive += 1
            self.kinds[error] += 1
            if self.max_consecutive and self.consecutive >= self.max_consecutive:
                raise JudgeFailureError(
                    f"the judge failed {self.consecutive} times in a row ({self._kinds()}); stopping")
        rate = self.failures / self.seen if self.seen else 0.0
        if self.max_error_rate < 1 and self.seen >= self.warmup and rate > self.max_error_rate:
            raise JudgeFailureError(
                f"the judge failed on {self.failures} of {self.seen} rows ({rate:.0%} > "
                f"{self.max_error_rate:.0%}; {self._kinds()}); stopping")

    def _kinds(self) -> str:
        return ", ".join(f"{kind}: {n}" for kind, n in self.kinds.most_common())
