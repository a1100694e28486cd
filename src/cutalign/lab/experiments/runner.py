"""`cutalign lab run`: every experiment of a preset, one after the other, into one resumable run folder.

``results.json`` and ``report.md`` are rewritten atomically after each experiment, so a killed run
leaves a partial report; rerunning the same command resumes (each experiment's units are cached by
``ctx.unit``, so only the unit that was running is redone). An experiment that raises is recorded as
failed, with its error, and the run goes on to the next one.
"""

from __future__ import annotations

import json
import os
import platform
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cutalign.files import atomic_write_json, atomic_write_text
from cutalign.lab.experiments import EXPERIMENTS, get_experiment
from cutalign.lab.experiments.context import ExperimentContext, Preset
from cutalign.lab.experiments.presets import get_preset
from cutalign.lab.experiments.report import render_report

RESULTS, REPORT = "results.json", "report.md"


class PresetMismatchError(ValueError):
    """The output folder holds a run of another preset (its cached units would be mixed in)."""


def run_lab(preset: str | Preset, output_dir: str | Path, experiments: Sequence[str] | None = None,
            cache_dir: str | Path | None = None, progress: bool = False, *, force: bool = False,
            command: str | None = None) -> dict[str, Any]:
    """Run ``experiments`` (default: the preset's, else all) of ``preset`` into ``output_dir``.

    Returns the content of ``results.json`` plus ``results_path``, ``report_path`` and ``failed`` (the
    names of the experiments that raised). Raises ``ValueError`` for an unknown preset or experiment
    and :class:`PresetMismatchError` when ``output_dir`` was started with another preset (``force``:
    reuse it anyway, the old units included).
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    names = list(experiments or preset.experiments or EXPERIMENTS)
    for name in names:
        get_experiment(name)
    out = Path(output_dir)
    results = _start(out, preset, force)
    results.update(status="running", command=command or _command(preset, out, experiments), total_seconds=0.0,
                   versions=versions(), machine=machine())
    bar = _bar(names, progress)
    for name in names:
        bar.set_description(name)
        results["experiments"][name] = run_experiment(name, preset, out, cache_dir, progress)
        results["experiments"] = {n: results["experiments"][n] for n in EXPERIMENTS if n in results["experiments"]}
        results["total_seconds"] += results["experiments"][name]["seconds"]
        _write(out, results)
        bar.update()
    bar.close()
    failed = [n for n in names if results["experiments"][n]["status"] != "ok"]
    results["status"] = "failed" if failed else "done"
    _write(out, results)
    return results | {"results_path": str(out / RESULTS), "report_path": str(out / REPORT), "failed": failed}


def run_experiment(name: str, preset: Preset, out: Path, cache_dir: str | Path | None,
                   progress: bool) -> dict[str, Any]:
    """One experiment through its context: its result, or its error with the traceback; timed."""
    experiment = get_experiment(name)
    ctx = ExperimentContext(preset=preset, run_dir=out, name=name,
                            cache_dir=Path(cache_dir) if cache_dir is not None else None, progress=progress)
    before, start = _units(ctx), time.perf_counter()
    entry: dict[str, Any] = {"name": name, "number": experiment.number, "title": experiment.title}
    try:
        result = experiment.load().run(ctx)
        entry |= {"status": "ok", "result": result.to_dict()}
    except Exception as error:  # recorded in results.json and the report, never swallowed
        entry |= {"status": "failed", "error": f"{type(error).__name__}: {error}",
                  "traceback": traceback.format_exc()}
    computed = len(_units(ctx) - before)
    return entry | {"seconds": time.perf_counter() - start, "units_computed": computed,
                    "units_cached": len(before)}


def _start(out: Path, preset: Preset, force: bool) -> dict[str, Any]:
    """The folder's results so far (same preset), or a fresh record of this run's preset."""
    fields = json.loads(json.dumps(asdict(preset), default=str))
    path = out / RESULTS
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("preset") != fields and not force:
            raise PresetMismatchError(
                f"{out} holds a run of preset {old.get('preset', {}).get('name')!r} with other settings than "
                f"{preset.name!r}; use another output_dir, or force to reuse it (its cached units included)")
        if old.get("preset") == fields:
            return {"preset": fields, "experiments": old.get("experiments", {})}
    elif out.exists() and any(out.iterdir()) and not force:
        raise PresetMismatchError(f"{out} is not empty and holds no {RESULTS}; use another output_dir or force")
    results = {"preset": fields, "experiments": {}, "command": "", "status": "starting", "total_seconds": 0.0,
               "versions": versions(), "machine": machine()}
    _write(out, results)
    return results


def _write(out: Path, results: dict[str, Any]) -> None:
    atomic_write_json(out / RESULTS, results)
    atomic_write_text(out / REPORT, render_report(results, {n: e.number for n, e in EXPERIMENTS.items()}))


def _units(ctx: ExperimentContext) -> set[str]:
    folder = ctx.dir / "units"
    return {p.name for p in folder.glob("*.json")} if folder.is_dir() else set()


def _command(preset: Preset, out: Path, experiments: Sequence[str] | None) -> str:
    text = f"cutalign lab run {preset.name} --output_dir {out}"
    return text + (f" --experiments {','.join(experiments)}" if experiments else "")


def versions() -> dict[str, str]:
    """The versions that decide the figures: Python, cutalign, torch, transformers, trl."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("cutalign", "torch", "transformers", "trl"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def machine() -> str:
    """One line: OS, CPU, core count, torch threads, and the load when the run started (timings depend on it)."""
    import torch

    load = f", load {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, torch threads "
            f"{torch.get_num_threads()}{load}, GPU {'yes' if torch.cuda.is_available() else 'no'}")


def _bar(names: Sequence[str], progress: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=len(names), desc="lab", unit="experiment", disable=not progress, leave=False)
