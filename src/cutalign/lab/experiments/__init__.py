"""The lab's experiments (issue 11), registered by name and imported only when run.

Each is a module of this package with ``run(ctx: ExperimentContext) -> ExperimentResult``
(see :mod:`cutalign.lab.experiments.context`); `cutalign lab run` runs them through
:func:`cutalign.lab.experiments.runner.run_lab`, `cutalign lab list` shows which exist.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Experiment:
    """A registry entry: the paper-style number and title, and the module that runs it."""

    name: str
    number: int
    title: str
    module: str

    def available(self) -> bool:
        """Whether the module is written yet (checked without importing it)."""
        return importlib.util.find_spec(self.module) is not None

    def load(self) -> ModuleType:
        """The experiment's module; a clear :class:`ExperimentNotAvailable` when it does not exist yet."""
        if not self.available():
            raise ExperimentNotAvailable(f"experiment {self.name!r} (#{self.number}) is not written yet: "
                                         f"no module {self.module}")
        module = importlib.import_module(self.module)
        if not callable(getattr(module, "run", None)):
            raise ExperimentNotAvailable(f"{self.module} has no run(ctx) function")
        return module


class ExperimentNotAvailable(ImportError):
    """The experiment's module is missing or has no ``run``."""


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment("offline", 1, "Offline: every method of `cutalign train` on the same judged samples",
                   "cutalign.lab.experiments.offline"),
        Experiment("online", 2, "Online: k iterations of `cutalign online` with fresh prompts",
                   "cutalign.lab.experiments.online"),
        Experiment("rewards", 3, "Judgments vs rewards: CUT vs DPO on the same sampled responses",
                   "cutalign.lab.experiments.rewards"),
        Experiment("detection", 4, "Detection: precision / recall / F1 of U against gold error tokens",
                   "cutalign.lab.experiments.detection"),
        Experiment("ablations", 5, "Ablations: the paper's five switches", "cutalign.lab.experiments.ablations"),
        Experiment("regimes", 6, "Regime map: positive scarcity x error regime x judgment style",
                   "cutalign.lab.experiments.regimes"),
        Experiment("peers", 7, "Peers: TRL's SDFT with the judgment as privileged context",
                   "cutalign.lab.experiments.peers"),
        Experiment("recipe", 8, "Beyond the paper: a judgment-based recipe where CUT is weak",
                   "cutalign.lab.experiments.recipe"),
    )
}


def get_experiment(name: str) -> Experiment:
    """The registered experiment ``name``; a ``ValueError`` naming the choices otherwise."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


__all__ = ["EXPERIMENTS", "Experiment", "ExperimentNotAvailable", "get_experiment"]
