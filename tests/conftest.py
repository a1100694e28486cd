"""Shared fixtures. Tests that read ../shared fail loudly (not skip) when it is missing."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
from hypothesis import settings
from typer.testing import CliRunner

# CI runs the fuzz tests derandomized (the same examples every run, so a red CI is reproducible);
# local runs explore new examples each time.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CUTALIGN_SHARED", REPO_ROOT.parent / "shared"))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(
            f"this test needs {path} (the project's ../shared folder with real data and the Llama-2 "
            "tokenizer); set CUTALIGN_SHARED to its location",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED)


@pytest.fixture(scope="session")
def shepherd_dir() -> Path:
    return _require(SHARED / "data" / "shepherd")


@pytest.fixture(scope="session")
def cut_online_dir() -> Path:
    return _require(SHARED / "data" / "cut-online")


@pytest.fixture(scope="session")
def llama2_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(_require(SHARED / "tokenizers" / "llama2")))


@pytest.fixture(scope="session")
def online_examples(cut_online_dir):
    """The first 48 canonical examples of the paper's online iteration 1 (judge errors dropped)."""
    from cutalign.data.converters import convert
    from cutalign.data.schema import PolarityRule

    examples, _ = convert("cut-alpaca", [cut_online_dir / "train-alpaca-sample-iter1.json"], PolarityRule())
    return examples[:48]


@pytest.fixture()
def tokenizer(llama2_tokenizer):
    tok = copy.deepcopy(llama2_tokenizer)
    if tok.pad_token_id is None:
        tok.pad_token = tok.unk_token
    return tok


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, llama2_tokenizer):
    """A tiny Llama with the real Llama-2 tokenizer saved as a model directory (read-only in tests)."""
    from cutalign.demo.assets import tiny_causal_lm

    tokenizer = copy.deepcopy(llama2_tokenizer)
    tokenizer.pad_token = tokenizer.unk_token
    path = tmp_path_factory.mktemp("tiny")
    tiny_causal_lm(tokenizer, hidden_size=32).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def cli_ok():
    """Invoke `cutalign ARGS...` in-process and fail with its output unless it exits 0."""
    from cutalign.cli import _register, app

    _register()
    runner = CliRunner()

    def invoke(*args):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output + repr(result.exception)
        return result

    return invoke


@pytest.fixture(scope="session")
def served_tiny_model(tiny_model_dir):
    """`cutalign serve` of the tiny model: a subprocess on a free 127.0.0.1 port with a bearer key
    (tests/servers.py: `.base_url`, `.model`, `.api_key_env`, `.kill()`, `.restart()`); one per session."""
    from servers import ServedModel

    with ServedModel(tiny_model_dir).running() as server:
        yield server


@pytest.fixture(scope="session")
def policy_dir(tmp_path_factory) -> Path:
    """The online tests' policy: a random tiny Llama with the lab's tokenizer (answers badly, so the judge has work)."""
    from cutalign.lab.models import tiny_causal_lm
    from cutalign.lab.tokenizer import build_demo_tokenizer

    path = tmp_path_factory.mktemp("policy")
    tokenizer = build_demo_tokenizer()
    tiny_causal_lm(tokenizer, hidden_size=32, seed=1).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
