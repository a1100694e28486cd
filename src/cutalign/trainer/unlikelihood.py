"""Plain unlikelihood training: CUT with its ablations "no detection" and "no Align-N" forced.

Every response token of a negative gets the unlikelihood term ``-alpha * log(1 - p(y_t | x))``
and positives get MLE on ``y | x`` (docs/cut-method.md §4-§5). Reusing `CUTTrainer` and
`cut_loss` keeps the reductions (paper / official), the data handling and Align-P downsampling
identical to CUT, so the comparison isolates the judgment-driven detection. With neither
detection nor Align-N, `CUTTrainer` runs only the plain ``x -> y`` pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cutalign.trainer.config import CUTConfig
from cutalign.trainer.cut_trainer import CUTTrainer


@dataclass
class UnlikelihoodConfig(CUTConfig):
    """`CUTConfig` with `no_detection` and `no_align_n` fixed to true; `alpha` weighs the unlikelihood term.

    The detection fields (`threshold`, `misalign_mode`, `fake_positive_text`) are not read.
    """

    no_detection: bool = field(
        default=True, metadata={"help": "Fixed to true: unlikelihood on every response token of the negatives."}
    )
    no_align_n: bool = field(
        default=True, metadata={"help": "Fixed to true: negatives get no y | [x, j-] likelihood term."}
    )

    def __post_init__(self) -> None:
        if not (self.no_detection and self.no_align_n):
            raise ValueError("unlikelihood training is CUT with no_detection and no_align_n; they cannot be set to "
                             "false (use --method cut for other ablations)")
        if self.no_l1:
            raise ValueError("no_l1 removes the unlikelihood term itself; use --method sft to train on positives only")
        if self.gamma != 0:
            raise ValueError(f"gamma must be 0 for unlikelihood training (there is no p(t|x,j-) to weigh with), "
                             f"got {self.gamma}")
        super().__post_init__()


class UnlikelihoodTrainer(CUTTrainer):
    """Token-level unlikelihood on negatives plus MLE on positives; see `UnlikelihoodConfig`."""

    method_name = "unlikelihood"

    def __init__(self, model: Any, args: UnlikelihoodConfig | None = None, **kwargs: Any) -> None:
        if args is None:
            args = UnlikelihoodConfig(output_dir="unlikelihood-output")
        if not isinstance(args, UnlikelihoodConfig):
            raise TypeError(f"UnlikelihoodTrainer needs an UnlikelihoodConfig, got {type(args).__name__}")
        super().__init__(model, args, **kwargs)
