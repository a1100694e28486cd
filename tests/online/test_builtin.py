"""The built-in default (no config): the lab base, the world's judge, CUT + LoRA on 2 CPU cores."""

from __future__ import annotations

import pytest

from cutalign.online import resolve_config, run_online


@pytest.mark.slow
def test_the_default_loop_raises_satisfaction_and_accuracy(tmp_path):
    result = run_online(resolve_config(None), tmp_path / "run", iterations=2, progress=False)
    rows = result.rows
    accuracy = [row["eval"]["accuracy"] for row in rows]
    rates = [row["satisfactory_rate"] for row in rows[1:]]
    assert accuracy[2] > accuracy[0], accuracy
    assert rates[1] > rates[0], rates
    assert (tmp_path / "run" / "online_curves.png").is_file()
