"""The lab's pretrained base: error regimes, a pretraining corpus, and a tiny Llama cached by config hash.

Aligning a random model shows only that a trainer learns. The base holds beliefs before any
judgment is seen, the way a pretrained LLM does: it is pretrained on

- fact statements and noisy demonstrations ("### Instruction: ... ### Response: ..."), whose
  values follow the regime: ``noise`` (a random wrong value now and then: the model's mode is
  right), ``misconception`` (for some facts the corpus mostly states one fixed wrong value, as in
  TruthfulQA) or ``mixed``;
- judged demonstrations in the CUT judged template, each response matching its (true) judgment,
  so that [x, j] contexts mean something to the base: the skill CUT's detection reads.

Builds are seeded and cached in ``<cache>/<hash of the spec>/`` (built in a temporary folder and
renamed, so an interrupted build leaves no half model behind).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cutalign.data.templates import ALPACA_JUDGED, ALPACA_PLAIN, DEFAULT_FAKE_POSITIVE
from cutalign.lab.tasks import Chain, make_chains, misconceived_products
from cutalign.lab.world import (
    ATTRIBUTES,
    MULTI_FACT_KINDS,
    SINGLE_FACT_KINDS,
    FactWorld,
    make_world,
    render_response,
)

REGIMES = ("noise", "misconception", "mixed")
SPEC_VERSION = 1  # bump when the corpus or the build changes, so old caches are not reused


@dataclass(frozen=True)
class Regime:
    """How the pretraining corpus is wrong. ``noise``: P(random wrong value) per statement."""

    kind: str = "misconception"
    noise: float = 0.1
    misconception_fraction: float = 0.25  # of the facts (and of the chains' products)
    misconception_strength: float = 0.8  # P(the fixed wrong value) in statements of those facts

    def __post_init__(self) -> None:
        if self.kind not in REGIMES:
            raise ValueError(f"unknown regime {self.kind!r}; choose one of {', '.join(REGIMES)}")
        for name in ("noise", "misconception_fraction", "misconception_strength"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")

    @property
    def p_noise(self) -> float:
        return 0.0 if self.kind == "misconception" else self.noise

    @property
    def p_misconception(self) -> float:
        return 0.0 if self.kind == "noise" else self.misconception_fraction


@dataclass(frozen=True)
class BaseSpec:
    """Everything that decides a base model; its hash names the cache entry."""

    n_entities: int = 12
    world_seed: int = 0
    regime: Regime = field(default_factory=Regime)
    n_chains: int = 0
    chain_steps: int = 3
    demos_per_fact: int = 8
    judged_per_fact: int = 4
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    vocab_size: int = 1024
    epochs: float = 30.0
    learning_rate: float = 3e-3
    batch_size: int = 16
    block_size: int = 256
    seed: int = 0

    def key(self) -> str:
        payload = json.dumps({"version": SPEC_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def world(self) -> FactWorld:
        return make_world(self.n_entities, self.world_seed)

    def chains(self) -> list[Chain]:
        return make_chains(self.n_chains, self.chain_steps, seed=self.world_seed) if self.n_chains else []


@dataclass
class Beliefs:
    """What the corpus says: per fact, the fixed wrong value of a misconception (if any)."""

    world: FactWorld
    misconceptions: dict[tuple[str, str], str]
    wrong_products: dict[tuple[int, str, int], int]
    noise: float
    strength: float

    def draw(self, subject: str, attribute: str, rng: random.Random) -> str:
        """One value as a corpus statement gives it."""
        truth = self.world.values[subject, attribute]
        wrong = self.misconceptions.get((subject, attribute))
        if wrong is not None and rng.random() < self.strength:
            return wrong
        if rng.random() < self.noise:
            return rng.choice([v for v in self.world.pools[attribute] if v != truth])
        return truth

    def chain_results(self, chain: Chain, rng: random.Random) -> list[int]:
        wrong = {k: v for k, v in self.wrong_products.items() if rng.random() < self.strength}
        results = chain.results(wrong)
        if rng.random() < self.noise:
            i = rng.randrange(len(results))
            results = [r + (rng.choice([-2, -1, 1, 2]) if j >= i else 0) for j, r in enumerate(results)]
        return results


# The demo world's base (12 countries, 12 people: 72 facts), a quarter (18) of its facts misconceived:
# the base of `cutalign demo`, of `cutalign online`'s built-in default and of the lab's presets.
DEMO_BASE = BaseSpec(n_entities=12, world_seed=0, regime=Regime("misconception", misconception_fraction=0.25),
                     block_size=64, epochs=12.0)


def beliefs(spec: BaseSpec) -> Beliefs:
    """The regime's misconceptions, seeded: a fixed wrong value for a fraction of the facts."""
    world, regime = spec.world(), spec.regime
    rng = random.Random(f"misconceptions-{spec.world_seed}-{spec.seed}")
    facts = sorted(world.values)
    chosen = rng.sample(facts, round(regime.p_misconception * len(facts)))
    wrong = {f: rng.choice([v for v in world.pools[f[1]] if v != world.values[f]]) for f in chosen}
    products = misconceived_products(spec.chains(), regime.p_misconception, seed=spec.seed) if spec.n_chains else {}
    return Beliefs(world, wrong, products, regime.p_noise, regime.misconception_strength)


def pretraining_corpus(spec: BaseSpec) -> list[str]:
    """The base's documents: statements, demonstrations and judged demonstrations, seeded."""
    from cutalign.lab.judge import JudgeSettings, judge_response

    belief, rng = beliefs(spec), random.Random(spec.seed)
    world, docs = belief.world, []
    single = {kind.attributes[0]: kind for kind in SINGLE_FACT_KINDS}
    for (subject, attribute) in sorted(world.values):
        kind, claim = single[attribute], ATTRIBUTES[attribute]
        for _ in range(spec.demos_per_fact):
            value = belief.draw(subject, attribute, rng)
            docs.append(claim.claim.format(s=subject, v=claim.render(value)).capitalize() + ".")
            response = render_response(rng.choice(kind.responses), subject, {attribute: value})
            docs.append(ALPACA_PLAIN.format(instruction=rng.choice(kind.questions).format(s=subject)) + response)
        for _ in range(spec.judged_per_fact):
            question = rng.choice(kind.questions).format(s=subject)
            response = render_response(rng.choice(kind.responses), subject,
                                       {attribute: belief.draw(subject, attribute, rng)})
            judgment = judge_response(question, response, world=world, settings=JudgeSettings(), rng=rng)
            docs.append(ALPACA_JUDGED.format(instruction=question, judgment=judgment.text or DEFAULT_FAKE_POSITIVE)
                        + response)
    for kind in MULTI_FACT_KINDS:
        for subject in world.subjects_of(kind.subject_type):
            values = {a: belief.draw(subject, a, rng) for a in kind.attributes}
            question = rng.choice(kind.questions).format(s=subject)
            docs.append(ALPACA_PLAIN.format(instruction=question)
                        + render_response(rng.choice(kind.responses), subject, values))
    for chain in spec.chains():
        for _ in range(spec.demos_per_fact):
            docs.append(ALPACA_PLAIN.format(instruction=chain.prompt) + chain.answer(belief.chain_results(chain, rng)))
    rng.shuffle(docs)
    return docs


def cache_root() -> Path:
    """``$CUTALIGN_CACHE`` or ``$XDG_CACHE_HOME/cutalign`` (default ``~/.cache/cutalign``), then ``lab/``."""
    base = os.environ.get("CUTALIGN_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cutalign"
    return Path(base) / "lab"


def build_base(spec: BaseSpec, cache_dir: str | Path | None = None, progress: bool = False) -> tuple[Path, bool]:
    """The base model folder for ``spec`` and whether it was built now (False: found in the cache)."""
    final = Path(cache_dir or cache_root()) / spec.key()
    if (final / "lab_base.json").is_file():
        return final, False
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.key()}-", dir=final.parent))
    try:
        _pretrain(spec, tmp, progress)
        try:
            tmp.rename(final)
        except OSError:  # another process finished the same build first
            if not (final / "lab_base.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final, True


def _pretrain(spec: BaseSpec, out: Path, progress: bool) -> None:
    import datasets
    import torch
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from cutalign.files import atomic_write_json
    from cutalign.lab.models import tiny_causal_lm
    from cutalign.lab.tokenizer import build_demo_tokenizer
    from cutalign.lab.training import quiet

    started = time.perf_counter()
    docs = pretraining_corpus(spec)
    tokenizer = build_demo_tokenizer([*docs, DEFAULT_FAKE_POSITIVE], vocab_size=spec.vocab_size)
    blocks = _pack(tokenizer, docs, spec.block_size)
    model = tiny_causal_lm(tokenizer, "llama", hidden_size=spec.hidden_size, num_layers=spec.num_layers,
                           num_heads=spec.num_heads, seed=spec.seed, max_position_embeddings=spec.block_size * 8)
    args = TrainingArguments(
        output_dir=str(out / "trainer"), num_train_epochs=spec.epochs, learning_rate=spec.learning_rate,
        per_device_train_batch_size=spec.batch_size, lr_scheduler_type="cosine", warmup_steps=0.05,
        weight_decay=0.0, logging_steps=10, save_strategy="no", report_to=[], seed=spec.seed,
        use_cpu=not torch.cuda.is_available(), disable_tqdm=True, dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=datasets.Dataset.from_dict({"input_ids": blocks}),
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    result = quiet(trainer, "pretraining the lab base" if progress else None).train()
    shutil.rmtree(out / "trainer", ignore_errors=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    atomic_write_json(out / "lab_base.json", {
        "spec": asdict(spec), "key": spec.key(), "documents": len(docs), "tokens": sum(map(len, blocks)),
        "parameters": sum(p.numel() for p in model.parameters()), "train_loss": result.training_loss,
        "steps": trainer.state.global_step, "seconds": time.perf_counter() - started,
    })


def _pack(tokenizer: Any, docs: list[str], block_size: int) -> list[list[int]]:
    """Documents as <s> text </s>, concatenated and cut into blocks (the last partial block is kept)."""
    ids: list[int] = []
    for encoded in tokenizer(docs, add_special_tokens=True).input_ids:
        ids.extend([*encoded, tokenizer.eos_token_id])
    return [ids[i:i + block_size] for i in range(0, len(ids), block_size)]


def load_base(path: str | Path) -> tuple[Any, Any]:
    """Model (float32, eval mode off) and tokenizer of a built base."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    return model, tokenizer


def base_info(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / "lab_base.json").read_text(encoding="utf-8"))
