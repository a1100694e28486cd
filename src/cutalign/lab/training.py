"""Quiet Trainer runs for the lab: one progress bar on stderr, no printed log dicts, timed phases.

Library code prints nothing; a `transformers.Trainer` prints every log dict (PrinterCallback
without tqdm, ProgressCallback's `write` with it). :func:`quiet` swaps both for one bar whose
postfix is the last loss, shown only when the caller asks for progress.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback


class LossBar(TrainerCallback):
    """A tqdm bar over optimizer steps on stderr with the latest loss as postfix."""

    def __init__(self, desc: str) -> None:
        self.desc, self.bar = desc, None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_steps, desc=self.desc, leave=False, dynamic_ncols=True)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}", refresh=False)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def quiet(trainer: Trainer, desc: str | None = None) -> Trainer:
    """Remove the trainer's printing callbacks; with ``desc``, add a :class:`LossBar`."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if desc:
        trainer.add_callback(LossBar(desc))
    return trainer


class PhaseTimer:
    """Wall time of named phases, in the order they ran (the demo prints them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
