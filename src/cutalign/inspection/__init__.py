"""See what CUT flags, token by token (``cutalign inspect``).

- :func:`~cutalign.inspection.core.inspect_examples`: per-token p(t|x), p(t|x,j-), p(t|misaligned),
  ratio, U membership and unlikelihood weight, computed with the trainer's own code path;
- :mod:`~cutalign.inspection.html`, :mod:`~cutalign.inspection.figure`, :mod:`~cutalign.inspection.terminal`:
  a self-contained page, a Figure-2 style PNG and rich renderables;
- :mod:`~cutalign.inspection.sweep`: |U| per threshold and precision / recall / F1 against gold spans;
- :mod:`~cutalign.inspection.data`: reading examples with their optional ``error_spans``.

(Not named ``inspect``: that would shadow the standard library module.)
"""

from cutalign.inspection.core import InspectConfig, TokenReport, TokenScore, inspect_examples
from cutalign.inspection.sweep import SweepRow, sweep_thresholds

__all__ = ["InspectConfig", "SweepRow", "TokenReport", "TokenScore", "inspect_examples", "sweep_thresholds"]
