"""cutalign inspect: the trainer's U, token spans, sweep metrics, the HTML page in a real browser, the CLI."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
import torch

from cutalign.inspection import InspectConfig, inspect_examples, sweep_thresholds
from cutalign.inspection.html import render_html
from cutalign.inspection.sweep import gold_token_mask

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def trainer(online_examples, tiny_model_dir, tmp_path_factory):
    from cutalign.trainer.config import CUTConfig
    from cutalign.trainer.cut_trainer import CUTTrainer

    args = CUTConfig(output_dir=str(tmp_path_factory.mktemp("cut")), threshold=1.0, gamma=0.5, alpha=0.7,
                     positive_ratio=None, report_to=[], use_cpu=True, max_length=512, disable_tqdm=True)
    return CUTTrainer(str(tiny_model_dir), args=args, train_dataset=online_examples[:8])


@pytest.fixture(scope="module")
def reports(trainer, online_examples):
    return inspect_examples(trainer.model, trainer.processing_class, online_examples[:8],
                            InspectConfig.from_cut_config(trainer.args), template=trainer.template)


@torch.no_grad()
def trainer_flags(trainer) -> dict[str, list[bool]]:
    """U per example id as the CUT trainer computes it in its loss (its views, collator and passes)."""
    from cutalign.losses import cut_loss
    from cutalign.trainer.cut_trainer import _fit

    rows = trainer.train_dataset.to_list()
    batch = trainer._prepare_inputs(trainer.data_collator(rows))
    logps = trainer.context_logps(trainer.model.eval(), batch)
    plain, mask = logps["plain"]
    misaligned = _fit(logps["misaligned"], plain.shape[1], plain)
    args = trainer.args
    out = cut_loss(plain, _fit(logps["judged"], plain.shape[1], plain), misaligned, mask, batch["is_negative"], threshold=args.threshold,
                   alpha=args.alpha, gamma=args.gamma, mode=args.mode)
    return {row["id"]: out.unlikely_mask[i, : len(row["completion_ids"])].tolist() for i, row in enumerate(rows)}


def test_unlikely_tokens_are_the_trainers(trainer, reports):
    flags = trainer_flags(trainer)
    assert len(reports) == len(flags) == 7  # one response is too long for max_length=512
    assert any(r.is_negative for r in reports) and any(not r.is_negative for r in reports)
    assert sum(len(r.unlikely_indices) for r in reports) > 0  # lambda = 1 on a random model flags some
    for report in reports:
        assert [t.unlikely for t in report.tokens] == flags[report.id]
        if not report.is_negative:
            assert all(t.logp_judged is None and t.ratio is None for t in report.tokens)


def test_numbers_are_consistent(reports):
    negative = next(r for r in reports if r.is_negative)
    for t in negative.tokens:
        assert t.ratio == pytest.approx(t.p_judged / t.p_misaligned, rel=1e-6)
        assert t.weight == pytest.approx(0.7 * t.p_judged**0.5, rel=1e-5)  # alpha * p-^gamma
        assert t.unlikely == (t.logp_judged - t.logp_misaligned > math.log(1.0))
    assert negative.misalign_mode == "fake_positive" and negative.threshold == 1.0


def test_tokens_tile_the_completion(reports, llama2_tokenizer):
    for report in reports:
        text = "".join(t.text for t in report.tokens[:-1])
        assert text == report.completion
        assert report.tokens[-1].token_id == llama2_tokenizer.eos_token_id
        assert report.tokens[0].text == report.completion[: report.tokens[0].end]  # 'S' of 'Sure', not '▁Sure'


def test_sweep_counts_and_gold_metrics(reports):
    negative = [r for r in reports if r.is_negative]
    # Gold: the characters of the first three words of each negative's completion.
    for r in negative:
        cut = len(" ".join(r.completion.split(" ")[:3]))
        r.gold_spans = [(0, cut)]
    rows = sweep_thresholds(reports, [1.0, 1.5, 4.0], InspectConfig(threshold=1.0))
    assert rows[0].unlikely_tokens == sum(len(r.unlikely_indices) for r in negative)
    assert [r.unlikely_tokens for r in rows] == sorted((r.unlikely_tokens for r in rows), reverse=True)
    golds = [gold_token_mask(r) for r in negative]
    tp = sum(t.unlikely and g for r, gm in zip(negative, golds, strict=True) for t, g in zip(r.tokens, gm, strict=True))
    predicted = sum(len(r.unlikely_indices) for r in negative)
    actual = sum(sum(g) for g in golds)
    assert rows[0].true_positives == tp and rows[0].gold_tokens == actual and rows[0].gold_examples == len(negative)
    assert rows[0].precision == pytest.approx(tp / predicted)
    assert rows[0].recall == pytest.approx(tp / actual)
    for r in negative:
        r.gold_spans = None


class _Spans(HTMLParser):
    """Token spans per example section of the rendered DOM: (section index, token index, in U)."""

    def __init__(self) -> None:
        super().__init__()
        self.section = -1
        self.tokens: list[tuple[int, int, bool]] = []
        self.rendered: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "body":
            self.rendered = attrs.get("data-rendered")
        if tag == "section" and "example" in classes:
            self.section += 1
        if tag == "span" and "tok" in classes and "data-index" in attrs:
            self.tokens.append((self.section, int(attrs["data-index"]), "u" in classes))


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed (scripts/ci_deps.sh installs it: apt-get install -y chromium)")
    return path


def _browser(tmp_path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([_chromium(), *flags, *args], capture_output=True, text=True, timeout=90, check=True)


def test_html_renders_in_chromium_with_the_trainers_u(reports, trainer, tmp_path):
    page = tmp_path / "inspect.html"
    page.write_text(render_html(reports), encoding="utf-8")
    assert "http://" not in page.read_text() and "https://" not in page.read_text()  # no network assets
    dom = _browser(tmp_path, "--dump-dom", page.as_uri()).stdout
    parser = _Spans()
    parser.feed(dom)
    assert parser.rendered == str(len(reports))  # the script ran over the embedded JSON
    flags = trainer_flags(trainer)
    for i, report in enumerate(reports):
        shown = [(index, u) for section, index, u in parser.tokens if section == i]
        assert [index for index, _ in shown] == list(range(len(report.tokens)))
        assert [u for _, u in shown] == flags[report.id]
    shot = tmp_path / "shot.png"
    _browser(tmp_path, "--window-size=1200,900", f"--screenshot={shot}", page.as_uri())
    assert shot.stat().st_size > 10_000


def _write_data(path, examples, spans=None):
    rows = []
    for i, e in enumerate(examples):
        row = {k: e[k] for k in ("id", "prompt", "completion", "judgment", "label")}
        if spans is not None:
            row["error_spans"] = spans(e) if i == 0 else []
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.mark.slow  # two model loads and inspections through the CLI: ~15 s on a busy 2-core machine
def test_cli_writes_html_png_json_and_sweeps(online_examples, tiny_model_dir, tmp_path, cli_ok):
    negatives = [e for e in online_examples if not e["label"]][:2]
    data = tmp_path / "d.jsonl"
    _write_data(data, negatives, spans=lambda e: [[0, 5]])
    out = tmp_path / "out" / "view"
    result = cli_ok("inspect", "--model", tiny_model_dir, "--data", data, "--ids", negatives[1]["id"],
                    "--threshold", "1.0", "-o", out, "--json")
    shown = json.loads(result.stdout.strip().splitlines()[-1])
    assert [r["id"] for r in shown] == [negatives[1]["id"]]
    for ext in (".html", ".png", ".json"):
        assert (tmp_path / "out" / f"view{ext}").stat().st_size > 0
    sweep = cli_ok("inspect", "--model", tiny_model_dir, "--data", data, "--sweep", "1.0,2", "--json")
    rows = json.loads(sweep.stdout.strip().splitlines()[-1])["rows"]
    assert [r["threshold"] for r in rows] == [1.0, 2.0] and rows[0]["gold_examples"] == 2


def test_cli_bad_input_exits_2(online_examples, tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from cutalign.cli import _register, app

    _register()
    negatives = [e for e in online_examples if not e["label"]][:2]
    data = tmp_path / "d.jsonl"
    _write_data(data, negatives, spans=lambda e: [[0, 5]])
    runner = CliRunner()
    bad = runner.invoke(app, ["inspect", "--model", str(tiny_model_dir), "--data", str(data), "--sweep", "1,x"])
    assert bad.exit_code == 2 and "'x' is not a number" in bad.output
    bad = runner.invoke(app, ["inspect", "--model", str(tiny_model_dir), "--data", str(data), "--ids", "nope"])
    assert bad.exit_code == 2 and "no example with id nope" in bad.output
    _write_data(data, negatives, spans=lambda e: [[3, 1]])
    bad = runner.invoke(app, ["inspect", "--model", str(tiny_model_dir), "--data", str(data)])
    assert bad.exit_code == 2 and f"{data}:1: field 'error_spans'" in bad.output
