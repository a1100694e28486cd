"""The built-in default of `cutalign online`: the lab's fact world, its tiny model and its judge.

The prompt pool is every question the world can ask (all wordings, all subjects); the judge is
the world's programmatic judge (exact, free, instant); the evaluation is greedy fact accuracy on
one question per fact. A random tiny model answers nothing right, and CUT (like any method that
learns from its own judged samples) needs some right answers to reinforce, so the starting policy
is the tiny model after a short SFT on part of the bundled sample: it knows some facts, confuses
others, and the loop has something to correct -- as the paper starts from a chat model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cutalign.data.templates import ALPACA_PLAIN
from cutalign.demo.sample import load_sample, sample_world
from cutalign.lab import world as fact_world

# Warm start of the built-in policy (chosen so the base model knows some facts, not all).
BASE_SEED = 0
BASE_EPOCHS = 12
BASE_EXAMPLES = 480
BASE_METHOD = 'cut'
BASE_LEARNING_RATE = 3e-3


def prompt_pool() -> list[dict[str, Any]]:
    """Every question of the sample world, in every wording: ids are stable across versions of the run."""
    world = sample_world()
    rows = []
    for kind in fact_world.QUESTION_KINDS:
        for wording, question in enumerate(kind.questions):
            for subject in world.subjects_of(kind.subject_type):
                text = question.format(s=subject)
                rows.append({"id": f"{'+'.join(kind.attributes)}/{wording}/{subject}", "prompt": text})
    return rows


def build_base_model(output_dir: Path, train_fn: Any) -> None:
    """The built-in starting policy: the lab's tiny model after a short seeded SFT, saved to `output_dir`."""
    from cutalign.lab.models import demo_model_and_tokenizer

    model, tokenizer = demo_model_and_tokenizer(seed=BASE_SEED)
    examples = load_sample()[:BASE_EXAMPLES]
    settings = {"num_train_epochs": BASE_EPOCHS, "learning_rate": BASE_LEARNING_RATE,
                "per_device_train_batch_size": 16, "max_length": 128, "warmup_steps": 0,
                "lr_scheduler_type": "constant", "seed": BASE_SEED, "positive_ratio": None}
    train_fn(BASE_METHOD, examples, model=(model, tokenizer), output_dir=output_dir, settings=settings, peft=None)


def evaluate(model_path: str) -> dict[str, float]:
    """Greedy accuracy on one question per fact of the world (the demo's measure)."""
    from cutalign.generation import load_for_inference

    model, tokenizer = load_for_inference(model_path, device="cpu")
    questions = fact_world.evaluation_set(sample_world())
    accuracy = fact_world.evaluate_accuracy(model, tokenizer, questions,
                                            lambda q: ALPACA_PLAIN.format(instruction=q))
    return {"accuracy": accuracy}
