"""The demo's bundled sample: judged examples of the lab's small fact world, shipped as package data.

It is what `cutalign train --data` users can try on at once, and the text the demo tokenizer is
trained on; :func:`write_sample` regenerates it deterministically and a test keeps it in sync.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cutalign.lab.world import FactWorld, judged_examples, make_world

SAMPLE_PATH = Path(__file__).with_name("sample.jsonl")
SAMPLE_N_ENTITIES = 12
SAMPLE_SEED = 0
SAMPLE_SIZE = 480
SAMPLE_NEGATIVE_FRACTION = 0.3


def sample_world() -> FactWorld:
    """The world the bundled sample was drawn from (the demo world: evaluate demo models on its facts)."""
    return make_world(SAMPLE_N_ENTITIES, SAMPLE_SEED)


def write_sample(path: str | Path = SAMPLE_PATH) -> Path:
    """(Re)generate the bundled sample: deterministic, so the committed file can be checked against it."""
    from cutalign.data.io import write_jsonl  # imports `datasets`: only needed here

    write_jsonl(judged_examples(sample_world(), SAMPLE_SIZE, SAMPLE_NEGATIVE_FRACTION, SAMPLE_SEED), path)
    return Path(path)


def load_sample() -> list[dict[str, Any]]:
    """The bundled sample's examples (canonical dicts)."""
    with SAMPLE_PATH.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
