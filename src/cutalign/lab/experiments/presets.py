"""The lab's three sizes: ``smoke`` (mechanics, in CI), ``quick`` (one seed of every table), ``full`` (three seeds).

Budgets (wall time of every experiment together on 2 CPU cores): smoke < 2 min, quick <= 20 min,
full <= 2 h. Experiments scale their work from these fields; a preset never changes what an
experiment measures, only how much.
"""

from __future__ import annotations

from dataclasses import replace

from cutalign.lab.align import DEMO_BASE, TrainSettings
from cutalign.lab.experiments.context import Preset

# The demo's tiny base (cutalign.demo.run.small_settings): 3 countries, 3 people, hidden 32; seconds to build.
SMOKE_BASE = replace(DEMO_BASE, n_entities=3, epochs=8.0, hidden_size=32, demos_per_fact=2, judged_per_fact=1,
                     vocab_size=512)

PRESETS: dict[str, Preset] = {
    "smoke": Preset(name="smoke", seeds=(0,), base=SMOKE_BASE, samples_per_fact=2, heldout_fraction=0.34,
                    eval_samples=1, train=TrainSettings(epochs=1.0), grid=(1e-3,), thresholds=(1.0, 1.2),
                    online_iterations=1, online_prompts=8),
    "quick": Preset(name="quick", seeds=(0,), base=DEMO_BASE, samples_per_fact=4, heldout_fraction=0.25,
                    eval_samples=4, train=TrainSettings(epochs=6.0), grid=(1e-3,),
                    online_iterations=2, online_prompts=96),
    "full": Preset(name="full", seeds=(0, 1, 2), base=DEMO_BASE, samples_per_fact=4, heldout_fraction=0.25,
                   eval_samples=8, train=TrainSettings(epochs=8.0), grid=(5e-4, 1e-3),
                   online_iterations=3, online_prompts=96),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a ``ValueError`` naming the choices otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
