"""The built-in default (no config): the lab base, the world's judge, CUT+ on the whole pool, 2 CPU cores."""

from __future__ import annotations

import pytest

from cutalign.online import resolve_config, run_online


@pytest.mark.slow
def test_the_default_loop_raises_satisfaction_and_accuracy(tmp_path):
    """Three iterations (about 5 minutes on 2 cores): what the README's table shows."""
    result = run_online(resolve_config(None), tmp_path / "run", iterations=3, progress=False)
    rows = result.rows
    accuracy = [row["eval"]["accuracy"] for row in rows]
    rates = [row["satisfactory_rate"] for row in rows[1:]]
    assert accuracy[3] > accuracy[0] + 0.05, accuracy  # 4+ more of the 72 facts right after three iterations
    assert rates[2] > rates[0], rates
    assert result.manifest["config"]["method"] == "cut_plus"
    assert (tmp_path / "run" / "online_curves.png").is_file()
