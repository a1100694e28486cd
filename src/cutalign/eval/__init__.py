"""Measure what training changed (``cutalign eval``).

- :mod:`~cutalign.eval.accuracy`: exact-match accuracy of programmatic tasks via a python judge;
- :mod:`~cutalign.eval.rouge`: ROUGE-1/2/L/Lsum with ``rouge-score``;
- :mod:`~cutalign.eval.winrate`: pairwise win rate (both orders, ties, bootstrap CI, length-controlled);
- :mod:`~cutalign.eval.compare`: one table and bar chart over several eval outputs;
- :mod:`~cutalign.eval.harness`: the lm-evaluation-harness hand-off (the paper's suite);
- :mod:`~cutalign.eval.outputs` / :mod:`~cutalign.eval.results`: reading outputs, writing results.

Every eval writes ``results.json`` and ``summary.md`` (atomically) into its output directory.
"""
