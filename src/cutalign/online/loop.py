"""`run_online`: generate -> judge -> build CUT data -> train -> merge -> evaluate, iteration after iteration.

Everything of iteration k lives in `run_dir/iter_k/`; its `manifest.json` says which stages are
done. Each stage writes its outputs durably (atomic files, resumable JSONL, checkpoints, a merge
into a temp dir renamed into place) before its status is recorded, so killing the process at any
moment and rerunning resumes at the interrupted stage and ends with the same models.
"""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cutalign.files import ResumableJSONL, atomic_write_json, atomic_write_jsonl
from cutalign.generation.base import SamplingParams
from cutalign.online import stages
from cutalign.online.builtin import build_base_model, prompt_pool
from cutalign.online.config import BUILTIN, OnlineConfig
from cutalign.online.manifest import MANIFEST, Manifest, check_config, iteration_seeds, open_run, versions
from cutalign.online.report import summary_row, write_plot

STAGES = ("prompts", "generate", "judge", "data", "train", "merge", "eval")


@dataclass
class OnlineResult:
    """What a run produced: one summary row per iteration (row 0: the starting policy)."""

    run_dir: Path
    rows: list[dict[str, Any]]
    final_model: Path
    plot: Path | None
    manifest: dict[str, Any] = field(default_factory=dict)


def run_online(config: OnlineConfig, run_dir: str | Path, *, iterations: int, force: bool = False,
               progress: bool = True) -> OnlineResult:
    """Run (or resume) `iterations` iterations of the online loop in `run_dir`; prints nothing."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    run_dir = Path(run_dir)
    check_config(run_dir, config, force)
    pool = _read_pool(config)
    needed = iterations * config.prompts_per_iteration
    if not config.reuse_prompts and needed > len(pool):
        raise ValueError(f"{iterations} iterations of {config.prompts_per_iteration} fresh instructions need {needed}, "
                         f"but the prompt pool has {len(pool)}; use fewer, a larger pool, or reuse_prompts")
    run = open_run(run_dir, config, force)
    model = _base_model(run, config, run_dir, progress)
    _base_eval(run, config, model, run_dir)
    for k in range(1, iterations + 1):
        model = _run_iteration(k, config, run, pool, model, run_dir / f"iter_{k}", progress)
        _prune_models(config, run_dir, k)
    rows = [summary_row(0, run.data)] + [summary_row(k, run.data["iterations"][str(k)])
                                          for k in range(1, iterations + 1)]
    plot = write_plot(rows, run_dir / "online_curves.png", config.eval_metric)
    run.data["summary"] = rows
    run.save()
    return OnlineResult(run_dir, rows, model, plot, run.data)


# ------------------------------------------------------------------------------ run-level stages
def _read_pool(config: OnlineConfig) -> list[dict[str, Any]]:
    if config.prompts == BUILTIN:
        return prompt_pool()
    from cutalign.cli.model import read_prompts

    pool = read_prompts(Path(config.prompts))
    ids = [str(r["id"]) for r in pool]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"{config.prompts}: prompt id {duplicate!r} occurs more than once (ids must be unique)")
    return [{"id": str(r["id"]), "prompt": r["prompt"]} for r in pool]


def _base_model(run: Manifest, config: OnlineConfig, run_dir: Path, progress: bool) -> Path:
    """The starting policy: the configured model, or the built-in one (built once into run_dir/base)."""
    if not config.is_builtin:
        return Path(config.model)
    target = run_dir / "base"
    if run.stage_done("base"):
        return target
    started = run.start_stage("base")
    tmp = run_dir / ".base.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    build_base_model(tmp, progress=progress)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    run.finish_stage("base", time.perf_counter() - started, model=_stored(target, run_dir))
    return target


def _base_eval(run: Manifest, config: OnlineConfig, model: Path, run_dir: Path) -> None:
    if not config.eval or run.stage_done("base_eval"):
        return
    started = run.start_stage("base_eval")
    metrics = stages.run_eval_hook(config.eval, model, 0, run_dir)
    run.data["eval"] = metrics
    run.finish_stage("base_eval", time.perf_counter() - started)


def _prune_models(config: OnlineConfig, run_dir: Path, k: int) -> None:
    if config.keep_models == "last":
        for j in range(1, k):
            shutil.rmtree(run_dir / f"iter_{j}" / "merged", ignore_errors=True)


# ----------------------------------------------------------------------------------- iteration
def _run_iteration(k: int, config: OnlineConfig, run: Manifest, pool: list[dict[str, Any]], model_in: Path,
                   it_dir: Path, progress: bool) -> Path:
    manifest = Manifest.load(it_dir / MANIFEST)
    if manifest is None:
        manifest = Manifest(it_dir / MANIFEST, {
            "iteration": k, "status": "running", "model_in": _stored(model_in, it_dir.parent),
            "config": config.to_dict(),
            "seeds": iteration_seeds(config.seed, k), "versions": versions(), "stages": {},
            "counts": {}, "drops": {}, "metrics": {}, "timings": {}})
        manifest.save()
    else:
        manifest.data["config"] = config.to_dict()  # a forced change applies to the remaining stages
    if manifest.data.get("status") == "done":
        return _loaded(manifest.data["model_out"], it_dir.parent)
    ctx = _Iteration(k, config, manifest, pool, model_in, it_dir, progress)
    for stage in STAGES:
        if not manifest.stage_done(stage):
            started = manifest.start_stage(stage)
            status, info = getattr(ctx, stage)()
            manifest.finish_stage(stage, time.perf_counter() - started, status, **info)
    model_out = it_dir / "merged" if manifest.data["stages"]["merge"]["status"] == "done" else model_in
    manifest.data.update(status="done", model_out=_stored(model_out, it_dir.parent))
    manifest.save()
    run.data["iterations"][str(k)] = {key: manifest.data[key] for key in
                                      ("status", "counts", "drops", "metrics", "timings", "stages", "model_out")}
    run.save()
    return model_out


@dataclass
class _Iteration:
    """The stages of one iteration; each returns (status, info) after writing its outputs durably."""

    k: int
    config: OnlineConfig
    manifest: Manifest
    pool: list[dict[str, Any]]
    model_in: Path
    dir: Path
    progress: bool

    @property
    def counts(self) -> dict[str, Any]:
        return self.manifest.data["counts"]

    def prompts(self) -> tuple[str, dict[str, Any]]:
        n, seed = self.config.prompts_per_iteration, self.manifest.data["seeds"]["prompts"]
        if self.config.reuse_prompts:
            if n > len(self.pool):
                raise ValueError(f"prompts_per_iteration={n} exceeds the pool of {len(self.pool)} instructions")
            chosen = random.Random(seed * 1000 + self.k).sample(self.pool, n)
        else:
            order = list(self.pool)
            random.Random(seed).shuffle(order)
            chosen = order[(self.k - 1) * n:self.k * n]
            if len(chosen) < n:
                raise ValueError(
                    f"the prompt pool ({len(self.pool)} instructions) is used up: iteration {self.k} needs "
                    f"{n} fresh ones; use a larger pool, fewer prompts_per_iteration, or reuse_prompts")
        atomic_write_jsonl(self.dir / "prompts.jsonl", chosen)
        self.counts["prompts"] = len(chosen)
        return "done", {}

    def _rows(self, name: str) -> list[dict[str, Any]]:
        return ResumableJSONL(self.dir / name, key=lambda r: r["id"]).rows()

    def generate(self) -> tuple[str, dict[str, Any]]:
        prompts = self._rows("prompts.jsonl")
        size, seed = self.config.generation_batch_size, self.manifest.data["seeds"]["generation"]
        with ResumableJSONL(self.dir / "generations.jsonl", key=lambda r: r["id"],
                            allowed_keys=[p["id"] for p in prompts]) as out:
            chunks = [prompts[i:i + size] for i in range(0, len(prompts), size)]
            todo = [(i, c) for i, c in enumerate(chunks) if any(p["id"] not in out for p in c)]
            if todo:
                generator = stages.make_policy_generator(self.config, str(self.model_in), self.progress)
                from tqdm.auto import tqdm

                bar = tqdm(total=len(chunks), initial=len(chunks) - len(todo), desc=f"iter {self.k}: generating",
                           disable=not self.progress, leave=False)
                for index, chunk in todo:
                    # A chunk is always generated whole with its own seed, so a redone chunk is identical.
                    params = SamplingParams(max_new_tokens=self.config.max_new_tokens, do_sample=self.config.do_sample,
                                            temperature=self.config.temperature, top_p=self.config.top_p,
                                            seed=seed * 100_003 + index)
                    results = generator.generate(stages.policy_inputs(generator, [p["prompt"] for p in chunk]), params)
                    out.append({"id": p["id"], "prompt": p["prompt"], "completion": r.text}
                               for p, r in zip(chunk, results, strict=True))
                    bar.update(1)
                bar.close()
        self.counts["generated"] = len(self._rows("generations.jsonl"))
        return "done", {}

    def judge(self) -> tuple[str, dict[str, Any]]:
        judge = stages.make_judge(self.config)
        stages.judge_generations(judge, self.dir / "generations.jsonl", self.dir / "judgments.jsonl",
                                 self.config.judge_batch_size, self.progress)
        judged = self._rows("judgments.jsonl")
        errors = [stages.judgment_error(r) for r in judged]
        ok = [r for r, e in zip(judged, errors, strict=True) if e is None]
        self.counts.update(judged=len(judged), judge_errors=len(judged) - len(ok),
                           satisfactory=sum(bool(r["label"]) for r in ok))
        by_kind: dict[str, int] = {}
        for error in filter(None, errors):
            by_kind[error] = by_kind.get(error, 0) + 1
        self.manifest.data["judge_errors_by_kind"] = dict(sorted(by_kind.items()))
        self.manifest.data["metrics"]["satisfactory_rate"] = (
            self.counts["satisfactory"] / len(ok) if ok else None)
        return "done", {"judge": str(getattr(judge, "name", self.config.judge))}

    def data(self) -> tuple[str, dict[str, Any]]:
        judged = self._rows("judgments.jsonl")
        rows = [{"id": r["id"], "prompt": r["prompt"], "completion": r["completion"],
                 "judgment": None if r["label"] else r["judgment"], "label": r["label"], "score": r.get("score")}
                for r in judged if stages.judgment_error(r) is None]
        atomic_write_jsonl(self.dir / "train_data.jsonl", rows)
        dropped = len(judged) - len(rows)
        self.manifest.data["drops"] = {"judge_error": dropped} if dropped else {}
        self.counts["train_rows"] = len(rows)
        return "done", {}

    def train(self) -> tuple[str, dict[str, Any]]:
        rows = self._rows("train_data.jsonl")
        if not rows:
            self.counts["trained_on"] = 0
            return "skipped", {"reason": "no judged row to train on"}
        config = self.config
        if not any(not r["label"] for r in rows) and _downsamples(config):
            self.counts["trained_on"] = 0
            return "skipped", {"reason": "every judged response is satisfactory and Align-P downsampling keeps "
                                         "int(positive_ratio x 0 negatives) = 0 positives"}
        peft = ({"r": config.lora_r, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
                 "target_modules": config.lora_target_modules} if config.use_peft else None)
        settings = {"seed": self.manifest.data["seeds"]["train"], "template": config.template,
                    **({"system_prompt": config.system_prompt} if config.system_prompt else {}), **config.train}
        outcome = stages.train_policy(config.method, rows, model=self.model_in, output_dir=self.dir / "train",
                                      settings=settings, peft=peft, save_steps=config.save_steps,
                                      progress=self.progress)
        self.counts["trained_on"] = outcome.trained_on
        self.manifest.data["drops"] = _add_counts(self.manifest.data["drops"], outcome.drops)
        self.manifest.data["metrics"].update({k: v for k, v in outcome.metrics.items()})
        return "done", {"method": config.method}

    def merge(self) -> tuple[str, dict[str, Any]]:
        if self.manifest.data["stages"]["train"]["status"] == "skipped":
            return "skipped", {"reason": "nothing was trained"}
        train_dir, target = self.dir / "train", self.dir / "merged"
        stages.remove_checkpoints(train_dir)
        stages.merge_policy(train_dir, target, self.config.merge_dtype)
        return "done", {"model": _stored(target, self.dir.parent)}

    def eval(self) -> tuple[str, dict[str, Any]]:
        metrics = dict(self.manifest.data["metrics"])
        status = "skipped"
        if self.config.eval:
            model = self.dir / "merged" if self.manifest.stage_done("merge") and (self.dir / "merged").is_dir() \
                else self.model_in
            metrics["eval"] = stages.run_eval_hook(self.config.eval, model, self.k, self.dir)
            self.manifest.data["metrics"]["eval"] = metrics["eval"]
            status = "done"
        atomic_write_json(self.dir / "metrics.json", metrics)
        return status, {}


def _downsamples(config: OnlineConfig) -> bool:
    """Whether the method's Align-P downsampling is on (a ratio >= 0): then no negatives means no data."""
    import dataclasses

    from cutalign.api import method_classes

    if "positive_ratio" in config.train:
        ratio = config.train["positive_ratio"]
    else:
        fields = {f.name: f for f in dataclasses.fields(method_classes(config.method)[0])}
        ratio = fields["positive_ratio"].default if "positive_ratio" in fields else None
    return ratio is not None and ratio >= 0


def _add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for key, value in b.items():
        out[key] = out.get(key, 0) + value
    return dict(sorted(out.items()))


def _stored(path: Path, run_dir: Path) -> str:
    """Paths inside the run directory are stored relative to it, so a run dir can be moved or compared."""
    try:
        return str(path.resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return str(path)


def _loaded(value: str, run_dir: Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() or not (run_dir / path).exists() else run_dir / path
