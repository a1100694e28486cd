"""The one model loader and LoRA merging, on a tiny saved Llama with the real Llama-2 tokenizer."""

from __future__ import annotations

import time

import pytest
import torch
import yaml

from cutalign.models import ModelNotFoundError, check_model_exists, load_model, merge_adapter


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_model_dir):
    """A LoRA adapter on the tiny model (non-zero B, so merging changes the weights), saved as training does."""
    from peft import LoraConfig, get_peft_model

    base, tokenizer = load_model(tiny_model_dir)
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "cutalign_config.yaml").write_text(yaml.safe_dump({"method": "cut", "template": "alpaca"}))
    (path / "training_curves.png").write_bytes(b"\x89PNG curves")
    (path / "README.md").write_text("---\nlibrary_name: peft\n---\n\n# CUT\n\nThis LoRA adapter was trained with "
                                    "cutalign.\n\n## Training configuration\n\n| field | value |\n")
    return path


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_load_model_gives_a_tokenizer_with_a_pad_token_and_eval_mode(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir, dtype="float32")
    assert tokenizer.pad_token_id is not None and not model.training
    assert next(model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("name", ["./no-such-model", "../no-such-model", "~/no-such-model-xyz", "a/b/c"])
def test_path_like_names_that_do_not_exist_fail_at_once(name):
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model(name)
    assert time.perf_counter() - start < 1


def test_a_missing_folder_under_an_existing_one_is_a_path(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        check_model_exists(str(tmp_path / "runs" / "nope"))
    (tmp_path / "runs").mkdir()
    with pytest.raises(ModelNotFoundError):
        check_model_exists(str(tmp_path / "runs" / "nope"))


def test_an_uncached_hub_id_offline_fails_without_retries(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError, match="not in the hub cache"):
        check_model_exists("some-org/surely-not-cached-model")


def test_adapter_dir_loads_on_its_base_and_merges(adapter_dir):
    from peft import PeftModel

    peft_model, tokenizer = load_model(adapter_dir)
    merged, _ = load_model(adapter_dir, merge=True)
    assert isinstance(peft_model, PeftModel) and not isinstance(merged, PeftModel)
    ids = torch.tensor([tokenizer("Hello world").input_ids])
    torch.testing.assert_close(_logits(peft_model, ids), _logits(merged, ids), rtol=1e-4, atol=1e-4)


def test_merge_adapter_writes_a_merged_model_with_its_card_and_config(adapter_dir, tiny_model_dir, tmp_path):
    out = merge_adapter(adapter_dir, tmp_path / "merged")
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not (out / "adapter_config.json").exists()
    assert yaml.safe_load((out / "cutalign_config.yaml").read_text())["method"] == "cut"
    assert (out / "training_curves.png").read_bytes() == b"\x89PNG curves"  # the card's image is not broken
    card = (out / "README.md").read_text()
    assert "This LoRA adapter" not in card and "library_name: transformers" in card
    assert str(adapter_dir) in card and f"base_model: {tiny_model_dir}" in card
    assert "## Training configuration" in card  # the adapter card's sections are kept
    assert not list(tmp_path.glob(".merged*"))  # no staging folder left behind
    reloaded, tokenizer = load_model(out)
    peft_model, _ = load_model(adapter_dir)
    ids = torch.tensor([tokenizer("Add 2 and 3.").input_ids])
    torch.testing.assert_close(_logits(reloaded, ids), _logits(peft_model, ids), rtol=1e-4, atol=1e-4)


def test_merge_adapter_refuses_what_is_not_an_adapter_or_not_a_model_folder(adapter_dir, tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="not a LoRA adapter"):
        merge_adapter(tiny_model_dir, tmp_path / "x")
    precious = tmp_path / "data"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a model folder"):
        merge_adapter(adapter_dir, precious)
    assert (precious / "notes.txt").read_text() == "keep me"
