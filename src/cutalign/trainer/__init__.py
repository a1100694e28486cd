"""Trainers and their configurations, one registry entry per method of `cutalign train --method`."""

from __future__ import annotations

from dataclasses import dataclass

from cutalign.trainer.config import CUTConfig, JudgmentTrainingConfig


@dataclass(frozen=True)
class Method:
    """A training method: its config class and trainer class, by import path (imported lazily)."""

    name: str
    config: str
    trainer: str
    summary: str

    def load(self) -> tuple[type, type]:
        from importlib import import_module

        def get(path: str) -> type:
            module, _, attr = path.rpartition(".")
            return getattr(import_module(module), attr)

        return get(self.config), get(self.trainer)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("cut", "cutalign.trainer.config.CUTConfig", "cutalign.trainer.cut_trainer.CUTTrainer",
               "Contrastive Unlikelihood Training (the paper's method)."),
    )
}

__all__ = ["METHODS", "CUTConfig", "JudgmentTrainingConfig", "Method"]
