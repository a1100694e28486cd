"""CLI test fixtures: a saved tiny model and a runner that checks the exit code."""

from __future__ import annotations

import copy

import pytest
from typer.testing import CliRunner

from cutalign.cli import _register, app
from cutalign.demo.assets import tiny_causal_lm


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, llama2_tokenizer):
    """A tiny Llama with the real Llama-2 tokenizer saved as a model directory (read-only in tests)."""
    tokenizer = copy.deepcopy(llama2_tokenizer)
    tokenizer.pad_token = tokenizer.unk_token
    path = tmp_path_factory.mktemp("tiny")
    tiny_causal_lm(tokenizer, hidden_size=32).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def cli_ok():
    """Invoke `cutalign ARGS...` in-process and fail with its output unless it exits 0."""
    _register()
    runner = CliRunner()

    def invoke(*args):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output + repr(result.exception)
        return result

    return invoke
