"""Model cards for cutalign outputs, laid out as TRL writes them, plus what only cutalign knows.

TRL's card (``trl/templates/lm_model_card.md``): front matter, quick start, training procedure,
framework versions, citations. cutalign adds the judged data (sources, counts, drops by reason with
intentional downsampling shown apart, notices), the training curves as ``training_curves.png``
beside README.md, and the final metrics. Written by hand rather than through
`Trainer.create_model_card`, which looks models and datasets up on the Hub (cutalign works offline),
and atomically, so a crash never leaves half a card.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from cutalign.data.report import DropReport
from cutalign.files import atomic_write_bytes, atomic_write_text

logger = logging.getLogger(__name__)

PAPER = "Reasons to Reject? Aligning Language Models with Judgments (Xu et al., ACL Findings 2024, arXiv 2312.14591)"
PAPER_URL = "https://arxiv.org/abs/2312.14591"
CURVES_FILE = "training_curves.png"
# What the curves show, when logged: the trainer's loss and CUT's own terms (cutalign/losses.py).
CURVE_KEYS = ("loss", "l1", "l2", "unlikely_fraction")

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

# As in README.md.
CITATION = """@inproceedings{xu2024reasons,
  title     = {Reasons to Reject? Aligning Language Models with Judgments},
  author    = {Xu, Weiwen and Cai, Deng and Zhang, Zhisong and Lam, Wai and Shi, Shuming},
  booktitle = {Findings of the Association for Computational Linguistics: ACL 2024},
  year      = {2024}
}"""
TRL_CITATION = """@software{vonwerra2020trl,
  title   = {{TRL: Transformers Reinforcement Learning}},
  author  = {von Werra, Leandro and Belkada, Younes and Tunstall, Lewis and Beeching, Edward and Thrush, Tristan and Lambert, Nathan and Huang, Shengyi and Rasul, Kashif and Gallouédec, Quentin},
  license = {Apache-2.0},
  url     = {https://github.com/huggingface/trl},
  year    = {2020}
}"""

# Fields worth showing on the card; the full config is in training_args.bin / cutalign_config.yaml.
CARD_FIELDS = (
    "threshold", "alpha", "gamma", "mode", "misalign_mode", "template", "max_length", "positive_ratio",
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
    "gradient_accumulation_steps", "seed", "beta", "loss_type",
)


def framework_versions() -> dict[str, str]:
    """Versions of the libraries a run depends on (TRL's card lists the same, plus cutalign and PEFT)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name, dist in (("cutalign", "cutalign"), ("TRL", "trl"), ("Transformers", "transformers"),
                       ("PEFT", "peft"), ("Pytorch", "torch"), ("Datasets", "datasets"), ("Tokenizers", "tokenizers")):
        try:
            out[name] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def _usage(model_ref: str, adapter: bool) -> list[str]:
    loader = (
        ["from peft import AutoPeftModelForCausalLM", "from transformers import AutoTokenizer", "",
         f'model = AutoPeftModelForCausalLM.from_pretrained("{model_ref}")',
         f'tokenizer = AutoTokenizer.from_pretrained("{model_ref}")']
        if adapter else
        ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
         f'model = AutoModelForCausalLM.from_pretrained("{model_ref}")',
         f'tokenizer = AutoTokenizer.from_pretrained("{model_ref}")']
    )
    return [
        "## Quick start", "", "```python", *loader,
        'prompt = "..."  # rendered with the training template (cutalign_config.yaml), as `cutalign generate` does',
        'ids = tokenizer(prompt, return_tensors="pt")',
        "print(tokenizer.decode(model.generate(**ids, max_new_tokens=128)[0], skip_special_tokens=True))",
        "```", "", "Or with the template it was trained with, read from the model directory:", "", "```bash",
        f"cutalign generate --model {model_ref} --data prompts.jsonl -o generations.jsonl", "```", "",
    ]


def _data_section(report: DropReport | None, counts: dict[str, Any]) -> list[str]:
    lines = ["### Data", ""]
    if report is not None and report.sources:
        lines += ["Sources: " + ", ".join(f"`{s}`" for s in report.sources), ""]
    kept = counts.get("train_examples")
    if report is not None and kept is not None:
        lines += [report.describe(kept) + ".", ""]
    if "positive" in counts:
        lines += [f"Training examples: {kept} ({counts['positive']} positive, {counts['negative']} negative).", ""]
    if report is not None:
        for title, table in (("Dropped (unusable)", report.drops()),
                             ("Left out on purpose (the method's sampling, not a data problem)", report.selections()),
                             ("Notices (examples kept)", report.notices_dict())):
            if table:
                lines += [f"{title}:", "", "| reason | examples |", "|---|---|"]
                lines += [f"| `{reason}` | {n} |" for reason, n in table.items()] + [""]
    lines += ["```json", json.dumps(counts, indent=2, sort_keys=True), "```", ""]
    return lines


def render_model_card(
    *, method: str, base_model: str | None, config: dict[str, Any], data_summary: dict[str, Any],
    results: dict[str, Any] | None = None, adapter: bool = False, report: DropReport | None = None,
    curves: str | None = None, model_ref: str = "path/to/this/model",
) -> str:
    """The card's Markdown. ``data_summary`` is shown as JSON (machine-readable); ``report`` as text."""
    title = METHOD_TITLES.get(method, method)
    library = "peft" if adapter else "transformers"
    front = ["---", f"library_name: {library}", "pipeline_tag: text-generation", "tags:", "- cutalign",
             f"- {method}", "- alignment", "- trl"]
    if base_model:
        front.append(f"base_model: {base_model}")
    front.append("---")
    intro = (f"This {'LoRA adapter' if adapter else 'model'} is a fine-tuned version of "
             + (f"`{base_model}`" if base_model else "a base model")
             + f", trained with cutalign using **{title}**, a method introduced in [{PAPER}]({PAPER_URL}).")
    lines = [*front, "", f"# Model Card for {Path(model_ref).name or model_ref}", "", intro, ""]
    lines += _usage(model_ref, adapter)
    lines += ["## Training procedure", "", "### Training configuration", "", "| field | value |", "|---|---|"]
    lines += [f"| `{k}` | `{config[k]}` |" for k in CARD_FIELDS if k in config] + [""]
    lines += _data_section(report, data_summary)
    if curves:
        lines += ["### Training curves", "", f"![training curves]({curves})", ""]
    if results:
        lines += ["### Final metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| `{k}` | {_fmt(v)} |" for k, v in sorted(results.items())] + [""]
    lines += ["### Framework versions", ""] + [f"- {k}: {v}" for k, v in framework_versions().items()] + [""]
    lines += ["## Citations", "", "Cite the method as:", "", "```bibtex", CITATION, "```", "",
              "Cite TRL as:", "", "```bibtex", TRL_CITATION, "```", ""]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def plot_training_curves(log_history: list[dict[str, Any]], path: Path) -> bool:
    """``loss``, ``l1``, ``l2`` and ``unlikely_fraction`` against the step, one panel each, as a PNG
    (matplotlib's Agg backend: no display needed). False when nothing was logged or matplotlib is
    not installed."""
    series = {key: [(e["step"], e[key]) for e in log_history if key in e and "step" in e] for key in CURVE_KEYS}
    series = {key: points for key, points in series.items() if points}
    if not series:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning("matplotlib is not installed: no %s", CURVES_FILE)
        return False
    import io

    figure = Figure(figsize=(4 * len(series), 3), layout="constrained")  # no pyplot: no global state
    for axes, (key, points) in zip(figure.subplots(1, len(series), squeeze=False)[0], series.items(), strict=True):
        steps, values = zip(*points, strict=True)
        axes.plot(steps, values, marker="." if len(steps) < 30 else None)
        axes.set(title=key, xlabel="step")
        axes.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
    return True


def write_model_card(output_dir: Path, trainer: Any, **extra: Any) -> Path:
    """Write README.md (and training_curves.png) into `output_dir` for a trainer that has
    `method_name`, `base_model_id` and `drop_report`."""
    from peft import PeftModel

    model = trainer.accelerator.unwrap_model(trainer.model) if hasattr(trainer, "accelerator") else trainer.model
    train = trainer.train_dataset
    report: DropReport = trainer.drop_report
    summary: dict[str, Any] = {"train_examples": len(train) if train is not None else 0,
                               "dropped": report.drops(), "selected_out": report.selections(),
                               "notices": report.notices_dict(), "sources": list(report.sources)}
    if train is not None and "is_negative" in train.column_names:
        negatives = sum(bool(x) for x in train["is_negative"])
        summary.update(negative=negatives, positive=len(train) - negatives)
    summary.update(extra.pop("data_summary", {}) or {})
    history = trainer.state.log_history or []
    results = {k: v for k, v in (history[-1] if history else {}).items() if k.startswith("train_")}
    last_logged = next((e for e in reversed(history) if "loss" in e), {})
    results.update({f"final_{k}": last_logged[k] for k in CURVE_KEYS if k in last_logged})
    output_dir.mkdir(parents=True, exist_ok=True)
    curves = CURVES_FILE if plot_training_curves(history, output_dir / CURVES_FILE) else None
    text = render_model_card(
        method=trainer.method_name, base_model=trainer.base_model_id, config=trainer.args.to_dict(),
        data_summary=summary, results=results, adapter=isinstance(model, PeftModel), report=report,
        curves=curves, model_ref=str(output_dir),
    )
    path = output_dir / "README.md"
    atomic_write_text(path, text)
    return path
