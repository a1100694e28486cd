"""The built-in default of `cutalign online`: the lab's fact world, its tiny model and its judge.

The prompt pool is every single-fact question of the world (all wordings, all subjects); the judge is
the world's programmatic judge (exact, free, instant); the evaluation is greedy fact accuracy on
one question per fact. The starting policy is the lab's pretrained tiny base (the one `cutalign demo`
starts from, cached): it answers fluently, knows most facts, and for a quarter of them holds a
misconception (its corpus mostly stated one fixed wrong value) -- the errors the loop must find
through its own judged samples, as the paper's loop starts from a chat model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cutalign.data.templates import ALPACA_PLAIN
from cutalign.demo.sample import sample_world
from cutalign.lab import world as fact_world


def base_spec() -> Any:
    """The lab base of `cutalign demo` (the demo world, a quarter of its facts misconceived; cached)."""
    from cutalign.lab.base import DEMO_BASE

    return DEMO_BASE


def prompt_pool() -> list[dict[str, Any]]:
    """Every single-fact question of the sample world, in every wording (72 facts x 3 = 216): the facts
    the evaluation asks about. Ids are stable across versions of the run."""
    world = sample_world()
    rows = []
    for kind in fact_world.SINGLE_FACT_KINDS:
        for wording, question in enumerate(kind.questions):
            for subject in world.subjects_of(kind.subject_type):
                text = question.format(s=subject)
                rows.append({"id": f"{'+'.join(kind.attributes)}/{wording}/{subject}", "prompt": text})
    return rows


def build_base_model(output_dir: Path, progress: bool = False) -> None:
    """The built-in starting policy: the lab's pretrained tiny base (built once, cached), copied to `output_dir`."""
    import shutil

    from cutalign.lab.base import build_base

    cached, _ = build_base(base_spec(), progress=progress)
    shutil.copytree(cached, output_dir)


def evaluate(model_path: str) -> dict[str, float]:
    """Greedy accuracy on one question per fact of the world (the demo's measure)."""
    from cutalign.generation import load_for_inference

    model, tokenizer = load_for_inference(model_path, device="cpu")
    questions = fact_world.evaluation_set(sample_world())
    accuracy = fact_world.evaluate_accuracy(model, tokenizer, questions,
                                            lambda q: ALPACA_PLAIN.format(instruction=q))
    return {"accuracy": accuracy}
