"""Run and iteration manifests: the loop's memory, written atomically after each stage's outputs.

A stage's status becomes "done" only once its outputs are durable, so a rerun trusts the manifest:
a done stage is skipped, any other stage is (re)started and resumes from what it left on disk.
Wall-clock figures live under `timings` (and `created_at`) so two runs compare equal without them.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from cutalign.files import atomic_write_json
from cutalign.online.config import OnlineConfig, changed_keys

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
VERSIONED_PACKAGES = ("cutalign", "torch", "transformers", "trl", "peft", "datasets", "accelerate")


class ConfigChangedError(ValueError):
    """The run directory was started with another config; `keys` names what differs."""

    def __init__(self, run_dir: Path, keys: list[str]) -> None:
        self.keys = keys
        super().__init__(f"{run_dir} was started with a different config (changed: {', '.join(keys)}); "
                         "rerun with the original settings, use a new --run_dir, or pass --force to continue "
                         "with the new config")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@dataclass
class Manifest:
    """A JSON document on disk (`path`), saved atomically after every change."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Manifest | None:
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:  # atomic writes make this someone else's edit, not a crash
            raise ValueError(f"{path}: not a valid manifest ({err}); remove it to start the run over") from err
        return cls(path, data)

    def save(self) -> None:
        atomic_write_json(self.path, self.data)

    # stages ---------------------------------------------------------------------------------
    def stage_done(self, stage: str) -> bool:
        return self.data.get("stages", {}).get(stage, {}).get("status") in ("done", "skipped")

    def finish_stage(self, stage: str, seconds: float, status: str = "done", **info: Any) -> None:
        """Record a finished stage (its outputs are already durable) and save."""
        self.data.setdefault("stages", {})[stage] = {"status": status, **info}
        self.data.setdefault("timings", {})[stage] = round(seconds, 3)
        self.save()

    def start_stage(self, stage: str) -> float:
        stages = self.data.setdefault("stages", {})
        if stages.get(stage, {}).get("status") != "running":
            stages[stage] = {"status": "running"}
            self.save()
        return time.perf_counter()


def check_config(run_dir: Path, config: OnlineConfig, force: bool) -> list[str]:
    """The keys a started run's config differs in; raises unless `force` (writes nothing)."""
    manifest = Manifest.load(run_dir / MANIFEST)
    if manifest is None:
        return []
    if manifest.data.get("kind") != "cutalign-online-run":
        raise ValueError(f"{manifest.path} is not the manifest of a `cutalign online` run")
    keys = changed_keys(manifest.data["config"], config.to_dict())
    if keys and not force:
        raise ConfigChangedError(run_dir, keys)
    return keys


def open_run(run_dir: Path, config: OnlineConfig, force: bool) -> Manifest:
    """The run manifest: created on the first call; later calls must bring the same config (or --force)."""
    keys = check_config(run_dir, config, force)
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.load(run_dir / MANIFEST)
    new = config.to_dict()
    if manifest is None:
        manifest = Manifest(run_dir / MANIFEST, {
            "format_version": FORMAT_VERSION, "kind": "cutalign-online-run", "config": new,
            "seeds": {"run": config.seed}, "versions": versions(), "stages": {}, "iterations": {},
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "timings": {}})
        manifest.save()
        return manifest
    if keys:
        manifest.data.setdefault("forced_config_changes", []).append(
            {"changed": keys, "previous": {k: manifest.data["config"].get(k.split(".")[0]) for k in keys}})
    manifest.data["config"] = new
    manifest.save()
    return manifest


def iteration_seeds(seed: int, iteration: int) -> dict[str, int]:
    """Per-iteration seeds derived from the run seed (recorded in the iteration manifest)."""
    return {"prompts": seed, "generation": seed * 1000 + iteration, "train": seed + iteration}
