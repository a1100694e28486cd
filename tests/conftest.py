"""Shared fixtures. Tests that read ../shared fail loudly (not skip) when it is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
    import copy

    tok = copy.deepcopy(llama2_tokenizer)
    if tok.pad_token_id is None:
        tok.pad_token = tok.unk_token
    return tok
