"""Model cards for cutalign outputs: which method, which paper, which base model and data.

Written by hand rather than through `Trainer.create_model_card`, which looks models and datasets up
on the Hub; cutalign must work offline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PAPER = "Reasons to Reject? Aligning Language Models with Judgments (Xu et al., ACL Findings 2024, arXiv 2312.14591)"

METHOD_TITLES = {
    "cut": "Contrastive Unlikelihood Training (CUT)",
    "sft": "Supervised fine-tuning on satisfactory responses",
    "hindsight": "Hindsight: MLE on the response given instruction and judgment",
    "forward_prediction": "Forward Prediction: MLE on the response, then on the judgment",
    "ilf_mle": "ILF-MLE: MLE on refined responses",
    "ilf_dpo": "ILF-DPO: DPO with refined responses preferred",
    "dpo": "DPO from scores",
    "unlikelihood": "Unlikelihood training on negative responses",
}

CITATION = """@inproceedings{xu2024reasons,
  title     = {Reasons to Reject? Aligning Language Models with Judgments},
  author    = {Xu, Weiwen and Cai, Deng and Zhang, Zhisong and Lam, Wai and Shi, Shuming},
  booktitle = {Findings of the Association for Computational Linguistics: ACL 2024},
  year      = {2024},
  url       = {https://arxiv.org/abs/2312.14591}
}"""

# Fields worth showing on the card; the full config is in training_args.bin / the YAML used.
CARD_FIELDS = (
    "threshold", "alpha", "gamma", "mode", "misalign_mode", "template", "max_length", "positive_ratio",
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
    "gradient_accumulation_steps", "seed", "beta", "loss_type",
)


def render_model_card(
    *, method: str, base_model: str | None, config: dict[str, Any], data_summary: dict[str, Any],
    results: dict[str, Any] | None = None, adapter: bool = False,
) -> str:
    title = METHOD_TITLES.get(method, method)
    library = "peft" if adapter else "transformers"
    front = ["---", f"library_name: {library}", "tags:", "- cutalign", f"- {method}", "- alignment"]
    if base_model:
        front.append(f"base_model: {base_model}")
    front.append("---")
    lines = [*front, "", f"# {title}", ""]
    lines.append(
        f"This {'LoRA adapter' if adapter else 'model'} was trained with "
        f"cutalign using **{title}**"
        + (f" on top of `{base_model}`." if base_model else ".")
    )
    lines += ["", f"Method from: {PAPER}.", "", "## Training configuration", "", "| field | value |", "|---|---|"]
    lines += [f"| `{k}` | `{config[k]}` |" for k in CARD_FIELDS if k in config]
    lines += ["", "## Data", "", "```json", json.dumps(data_summary, indent=2, sort_keys=True), "```"]
    if results:
        lines += ["", "## Results", "", "```json", json.dumps(results, indent=2, sort_keys=True), "```"]
    lines += ["", "## Citation", "", "```bibtex", CITATION, "```", ""]
    return "\n".join(lines)


def write_model_card(output_dir: Path, trainer: Any, **extra: Any) -> Path:
    """Write README.md into `output_dir` for a trainer that has `method_name` and `drop_report`."""
    from peft import PeftModel

    model = trainer.accelerator.unwrap_model(trainer.model) if hasattr(trainer, "accelerator") else trainer.model
    train = trainer.train_dataset
    summary: dict[str, Any] = {"train_examples": len(train) if train is not None else 0,
                               "dropped": trainer.drop_report.as_dict()}
    if train is not None and "is_negative" in train.column_names:
        negatives = sum(bool(x) for x in train["is_negative"])
        summary.update(negative=negatives, positive=len(train) - negatives)
    summary.update(extra.pop("data_summary", {}) or {})
    results = {k: v for k, v in (trainer.state.log_history[-1] if trainer.state.log_history else {}).items()
               if k.startswith("train_")}
    text = render_model_card(
        method=trainer.method_name, base_model=trainer.base_model_id, config=trainer.args.to_dict(),
        data_summary=summary, results=results, adapter=isinstance(model, PeftModel),
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "README.md"
    path.write_text(text, encoding="utf-8")
    return path
