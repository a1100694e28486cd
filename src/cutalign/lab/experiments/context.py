"""What every lab experiment receives: its preset, its folder, its seeds, and a resumable unit cache.

An experiment is a module of :mod:`cutalign.lab.experiments` with ``run(ctx) -> ExperimentResult``.
Its work is split into *units* (one training + evaluation, one sweep): ``ctx.unit(key, compute)``
returns the unit's saved JSON result when it exists and otherwise computes and saves it atomically,
so killing `cutalign lab run` at any moment and rerunning the same command redoes at most the
unit that was running.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cutalign.files import atomic_write_json
from cutalign.lab.align import DEMO_BASE, TrainSettings
from cutalign.lab.base import BaseSpec


@dataclass(frozen=True)
class Preset:
    """Sizes of one lab run. ``smoke`` proves every experiment runs (its figures mean little);
    ``quick`` gives one seed of every table; ``full`` three seeds."""

    name: str
    seeds: tuple[int, ...] = (0,)
    base: BaseSpec = DEMO_BASE  # the misconception-regime base; experiments vary its regime / seed
    samples_per_fact: int = 4
    heldout_fraction: float = 0.25
    eval_samples: int = 4  # T=1 samples per question for sampled accuracy
    train: TrainSettings = field(default_factory=TrainSettings)
    grid: tuple[float, ...] = (1e-3,)  # learning rates tried per method, chosen on the validation split
    thresholds: tuple[float, ...] = (1.0, 1.1, 1.2, 1.5, 2.0)  # detection lambdas
    online_iterations: int = 2
    online_prompts: int = 96
    experiments: tuple[str, ...] = ()  # empty: all


@dataclass
class Table:
    """A results table: ``rows`` are lists aligned with ``columns`` (numbers or text)."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "columns": self.columns, "rows": self.rows, "note": self.note}


@dataclass
class ExperimentResult:
    """What an experiment returns: tables for the report, figures (PNG paths relative to the run
    folder), a free-form JSON payload (every per-seed figure), and findings stated honestly."""

    name: str
    title: str
    tables: list[Table] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "tables": [t.to_dict() for t in self.tables],
                "figures": self.figures, "data": self.data, "findings": self.findings}


@dataclass
class ExperimentContext:
    """One experiment's run: the preset, the run folder (shared) and the experiment's own folder."""

    preset: Preset
    run_dir: Path
    name: str
    cache_dir: Path | None = None  # base models (default: cutalign.lab.base.cache_root())
    progress: bool = False

    @property
    def dir(self) -> Path:
        return self.run_dir / self.name

    def unit(self, key: str, compute: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        """The saved result of unit ``key``, or ``compute(scratch_dir)`` saved atomically.

        ``scratch_dir`` is the unit's folder for models and logs; it is emptied before a computation
        starts, so a unit killed half way starts clean.
        """
        result_path = self.dir / "units" / f"{_safe(key)}.json"
        if result_path.is_file():
            return json.loads(result_path.read_text(encoding="utf-8"))
        scratch = self.dir / "work" / _safe(key)
        if scratch.exists():
            shutil.rmtree(scratch)
        scratch.mkdir(parents=True)
        value = compute(scratch)
        atomic_write_json(result_path, value)
        return value

    def figure_path(self, stem: str) -> Path:
        """Where a PNG goes (in the experiment's folder); pass ``relative(path)`` to the result."""
        self.dir.mkdir(parents=True, exist_ok=True)
        return self.dir / f"{stem}.png"

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.run_dir))


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in key)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation; std 0 for one value."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_std of no values")
    mean = sum(values) / n
    return mean, (sum((v - mean) ** 2 for v in values) / n) ** 0.5


def fmt_mean_std(values: Sequence[float], percent: bool = True) -> str:
    """``73.6 ± 2.1`` (percent) or ``0.412 ± 0.010``; a single value without ``±``."""
    mean, std = mean_std(values)
    scale, digits = (100.0, 1) if percent else (1.0, 3)
    text = f"{mean * scale:.{digits}f}"
    return text if len(values) == 1 else f"{text} ± {std * scale:.{digits}f}"
