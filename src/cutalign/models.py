"""The one model loader (train, merge, generate, refine, serve, judge) and LoRA merging.

Every command loads weights the same way: safetensors only, no remote code unless asked, a pad
token ensured, a LoRA adapter folder loaded on its base model. A name that is meant as a local
folder but does not exist fails at once with :class:`ModelNotFoundError` instead of minutes of hub
retries ending in "couldn't connect to huggingface.co".
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ADAPTER_CONFIG = "adapter_config.json"
RUN_CONFIG = "cutalign_config.yaml"


@contextlib.contextmanager
def peft_deprecation_quiet() -> Iterator[None]:
    """PEFT reads transformers 5's deprecated `is_gradient_checkpointing`: a warning users cannot act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


class ModelNotFoundError(ValueError):
    """The model is neither a local folder nor a hub id that can be found."""


def looks_like_local_path(name: str) -> bool:
    """A name the user meant as a folder: ``./x``, ``../x``, ``/x``, ``~/x``, ``a/b/c``, or ``runs/x``
    where ``runs/`` is a local folder; a bare ``owner/name`` is a hub id."""
    if name.startswith(("./", "../", "/", "~", ".\\", "..\\")) or name in (".", ".."):
        return True
    if os.sep != "/" and os.sep in name:
        return True
    parent = Path(name).parent
    return name.count("/") > 1 or Path(name).exists() or (str(parent) != "." and parent.is_dir())


def check_model_exists(name: str, *, revision: str | None = None, token: str | bool | None = None) -> None:
    """Raise :class:`ModelNotFoundError` now when ``name`` cannot be a model (no hub retries)."""
    if Path(name).expanduser().exists():
        return
    if looks_like_local_path(name):
        raise ModelNotFoundError(f"model folder {name} does not exist")
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json", revision=revision)
    if isinstance(cached, str):
        return
    if constants.HF_HUB_OFFLINE:
        raise ModelNotFoundError(f"model {name} is not a local folder and not in the hub cache (offline mode)")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:  # one request with a short timeout, instead of from_pretrained's retries
        HfApi().model_info(name, revision=revision, token=token, timeout=5)
    except RepositoryNotFoundError as err:
        raise ModelNotFoundError(f"model {name} is not a local folder nor a hub model") from err
    except Exception as err:  # HTTP errors, or the hub client's transport errors (its HTTP library's classes)
        transport = type(err).__module__.startswith(("httpx", "httpcore", "requests", "urllib3"))
        if not (transport or isinstance(err, HfHubHTTPError | OSError | ValueError)):
            raise
        raise ModelNotFoundError(f"model {name} is not a local folder, not in the hub cache, and the hub "
                                 f"cannot be reached ({type(err).__name__})") from err


def _torch_dtype(dtype: Any) -> Any:
    import torch

    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return value


def quantization_config(quantization: Any, dtype: Any = None) -> Any:
    """``"8bit"`` / ``"4bit"`` as TRL builds them (nf4, compute dtype = ``dtype``), or a config as is."""
    if quantization is None or not isinstance(quantization, str):
        return quantization
    if quantization not in ("8bit", "4bit"):
        raise ValueError(f"quantization must be '8bit' or '4bit', got {quantization!r}")
    from trl import ModelConfig, get_quantization_config

    dtype_name = dtype if isinstance(dtype, str) else None
    return get_quantization_config(ModelConfig(load_in_8bit=quantization == "8bit",
                                               load_in_4bit=quantization == "4bit", dtype=dtype_name))


def load_model(
    path_or_id: str | Path,
    *,
    dtype: Any = "auto",
    device: str | None = None,
    merge: bool = False,
    quantization: Any = None,
    attn_implementation: str | None = None,
    revision: str | None = None,
    model_init_kwargs: dict[str, Any] | None = None,
    trust_remote_code: bool = False,
    use_safetensors: bool = True,
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer (with a pad token) from a folder, a hub id or a LoRA adapter.

    An adapter folder (``adapter_config.json``) is loaded on its base model as a ``PeftModel``, or
    merged into it with ``merge=True``. ``device=None`` leaves the weights where they load (the
    Trainer places them), ``"auto"`` picks CUDA when available. ``model_init_kwargs`` (e.g. ``token``)
    are passed to ``from_pretrained`` and win over the named arguments.
    """
    from transformers import AutoModelForCausalLM

    name = str(path_or_id)
    init = dict(model_init_kwargs or {})
    check_model_exists(name, revision=revision or init.get("revision"), token=init.get("token"))
    kwargs: dict[str, Any] = {"use_safetensors": use_safetensors, "trust_remote_code": trust_remote_code}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if revision is not None:
        kwargs["revision"] = revision
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    quant = quantization_config(quantization, dtype)
    if quant is not None:
        from trl import get_kbit_device_map

        kwargs.update(quantization_config=quant, device_map=get_kbit_device_map())
    kwargs.update(init)
    kwargs["dtype"] = _torch_dtype(kwargs.get("dtype"))
    if kwargs["dtype"] is None:
        del kwargs["dtype"]
    adapter = Path(name).expanduser() / ADAPTER_CONFIG
    if adapter.is_file():
        model, tokenizer_source = _load_adapter(adapter.parent, kwargs, merge)
    else:
        model, tokenizer_source = AutoModelForCausalLM.from_pretrained(name, **kwargs), name
    tokenizer = load_tokenizer(tokenizer_source, revision=kwargs.get("revision"), token=kwargs.get("token"),
                               trust_remote_code=kwargs["trust_remote_code"])
    if device is not None and quant is None:
        model = model.to(_device(device))
    return model.eval(), tokenizer


def _load_adapter(folder: Path, kwargs: dict[str, Any], merge: bool) -> tuple[Any, str]:
    """The adapter on its base model (loaded with the same options); the tokenizer saved with it wins."""
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM

    base_id = PeftConfig.from_pretrained(str(folder)).base_model_name_or_path
    if not base_id:
        raise ModelNotFoundError(f"{folder / ADAPTER_CONFIG} names no base model (base_model_name_or_path)")
    try:
        check_model_exists(base_id, token=kwargs.get("token"))
    except ModelNotFoundError as err:
        raise ModelNotFoundError(f"the base model of adapter {folder}: {err}") from err
    base_kwargs = {k: v for k, v in kwargs.items() if k != "revision"}  # the revision is the adapter's
    base = AutoModelForCausalLM.from_pretrained(base_id, **base_kwargs)
    with peft_deprecation_quiet():
        model = PeftModel.from_pretrained(base, str(folder))
    if merge:
        model = model.merge_and_unload()
    has_tokenizer = any((folder / f).is_file() for f in ("tokenizer_config.json", "tokenizer.json"))
    return model, str(folder) if has_tokenizer else base_id


def load_tokenizer(source: str, *, revision: str | None = None, token: Any = None,
                   trust_remote_code: bool = False) -> Any:
    """A tokenizer with a pad token (padding positions are masked, so UNK or EOS serves)."""
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision is not None:
        kwargs["revision"] = revision
    if token is not None:
        kwargs["token"] = token
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    ensure_pad_token(tokenizer)
    return tokenizer


def ensure_pad_token(tokenizer: Any) -> None:
    """Causal LMs often lack a pad token; padding positions are masked, so UNK (or EOS) serves."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has neither a pad, unk nor eos token to pad with")


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------- merge
def merge_adapter(adapter_dir: str | Path, output_dir: str | Path, dtype: str = "float32") -> Path:
    """Merge a LoRA adapter into its base model; write safetensors, tokenizer, the run config and a
    merged-model card. Everything is written into a temporary folder renamed into place, so a
    failure never leaves a half-written model (nor destroys an earlier one)."""
    adapter_dir, output_dir = Path(adapter_dir), Path(output_dir)
    if not (adapter_dir / ADAPTER_CONFIG).is_file():
        raise ValueError(f"{adapter_dir} has no {ADAPTER_CONFIG} (not a LoRA adapter directory)")
    if output_dir.exists() and (not output_dir.is_dir() or (any(output_dir.iterdir())
                                                             and not (output_dir / "config.json").is_file())):
        raise ValueError(f"{output_dir} exists and is not a model folder; choose another --output")
    model, tokenizer = load_model(adapter_dir, dtype=dtype, merge=True)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = output_dir.parent / f".{output_dir.name}.merging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(str(staging), safe_serialization=True)
        tokenizer.save_pretrained(str(staging))
        for name in (RUN_CONFIG, "training_curves.png"):  # the template travels; the card shows the curves
            if (adapter_dir / name).is_file():
                shutil.copy2(adapter_dir / name, staging / name)
        base_id = getattr(model.config, "_name_or_path", None) or _adapter_base(adapter_dir)
        (staging / "README.md").write_text(merged_model_card(adapter_dir, base_id), encoding="utf-8")
        _replace_dir(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def _adapter_base(adapter_dir: Path) -> str | None:
    import json

    return json.loads((adapter_dir / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")


def _replace_dir(new: Path, target: Path) -> None:
    """Swap ``new`` into ``target``'s place with renames (an earlier folder is removed only after)."""
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def merged_model_card(adapter_dir: Path, base_model: str | None) -> str:
    """The adapter's card rewritten for a merged model: which base, which adapter, then its sections."""
    import yaml

    method = None
    if (adapter_dir / RUN_CONFIG).is_file():
        config = yaml.safe_load((adapter_dir / RUN_CONFIG).read_text(encoding="utf-8")) or {}
        method = config.get("method") if isinstance(config, dict) else None
    front = ["---", "library_name: transformers", "tags:", "- cutalign", "- merged"]
    if method:
        front.append(f"- {method}")
    if base_model:
        front.append(f"base_model: {base_model}")
    front.append("---")
    body = [
        "", "# Merged model", "",
        f"The LoRA adapter `{adapter_dir}`" + (f" (trained with cutalign, method `{method}`)" if method else "")
        + f" merged into the weights of its base model `{base_model or 'unknown'}`. "
        "Load it as a plain transformers model; no PEFT needed.",
    ]
    card = adapter_dir / "README.md"
    sections = ""
    if card.is_file():
        text = card.read_text(encoding="utf-8")
        start = text.find("\n## ")
        sections = text[start:] if start >= 0 else ""
    return "\n".join(front + body) + "\n" + sections.rstrip("\n") + "\n"
