"""The online loop end to end on the built-in fact world, with fast settings (a tiny random model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import HERE, fast_args

from cutalign.online import ConfigChangedError, resolve_config
from cutalign.online.manifest import open_run

STAGES = ("prompts", "generate", "judge", "data", "train", "merge", "eval")




def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_two_iterations_end_to_end(cli_ok, policy_dir, tmp_path):
    run_dir = tmp_path / "run"
    result = cli_ok("online", *fast_args(policy_dir, "--keep_models", "last"), "--run_dir", run_dir,
                    "--iterations", 2, "--no_progress")
    assert "satisfactory rate" in result.output and "final model" in result.output
    run = json.loads((run_dir / "manifest.json").read_text())
    assert set(run["versions"]) >= {"cutalign", "torch", "transformers", "trl", "peft"}
    assert run["stages"]["base_eval"]["status"] == "done" and "accuracy" in run["eval"]
    seen: set[str] = set()
    for k in (1, 2):
        it = run_dir / f"iter_{k}"
        manifest = json.loads((it / "manifest.json").read_text())
        assert manifest["status"] == "done"
        assert [manifest["stages"][s]["status"] for s in STAGES] == ["done"] * len(STAGES)
        counts = manifest["counts"]
        assert counts["prompts"] == counts["generated"] == counts["judged"] == 8
        judged = _read(it / "judgments.jsonl")
        assert counts["satisfactory"] == sum(r["label"] for r in judged)
        assert 0 < counts["trained_on"] <= counts["train_rows"] == 8
        assert counts["trained_on"] + sum(v for r, v in manifest["drops"].items() if r != "judge_error") == 8
        assert set(manifest["seeds"]) == {"prompts", "generation", "train"}
        ids = {r["id"] for r in _read(it / "prompts.jsonl")}
        assert not ids & seen, "an instruction was reused across iterations"
        seen |= ids
        assert {r["id"] for r in _read(it / "generations.jsonl")} == ids == {r["id"] for r in judged}
        assert "accuracy" in json.loads((it / "metrics.json").read_text())["eval"]
        assert not list((it / "train").glob("checkpoint-*")), "checkpoints are removed once merged"
    second = json.loads((run_dir / "iter_2" / "manifest.json").read_text())
    assert second["model_in"] == "iter_1/merged"
    assert not (run_dir / "iter_1" / "merged").exists() and (run_dir / "iter_2" / "merged").is_dir()
    assert (run_dir / "online_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [row["iteration"] for row in run["summary"]] == [0, 1, 2]


def test_a_failing_judge_is_counted_and_the_rest_trained_on(cli_ok, policy_dir, tmp_path):
    run_dir = tmp_path / "run"
    judge = f"python:{HERE / 'slow_judge.py'}:flaky"
    cli_ok("online", *fast_args(policy_dir, judge=judge, evaluate=False), "--run_dir", run_dir, "--iterations", 1, "--no_progress")
    it = run_dir / "iter_1"
    manifest = json.loads((it / "manifest.json").read_text())
    prompts = _read(it / "prompts.jsonl")
    failing = [p for p in prompts if any(w in p["prompt"] for w in ("born", "birth", "language"))]
    assert 0 < len(failing) < len(prompts), "the seeded draw should hold both kinds of question"
    assert manifest["counts"]["judge_errors"] == len(failing)
    assert manifest["drops"]["judge_error"] == len(failing)
    assert manifest["judge_errors_by_kind"] == {"judge_exception": len(failing)}
    trained = _read(it / "train_data.jsonl")
    assert {r["id"] for r in trained} == {p["id"] for p in prompts} - {p["id"] for p in failing}
    assert manifest["counts"]["trained_on"] == len(trained) - sum(
        v for r, v in manifest["drops"].items() if r != "judge_error")


def test_a_changed_config_is_refused_without_force(policy_dir, tmp_path):
    run_dir = tmp_path / "run"
    overrides = {"model": str(policy_dir), "train": {"learning_rate": 0.003}}
    open_run(run_dir, resolve_config(None, overrides), force=False)
    changed = resolve_config(None, {**overrides, "seed": 7, "train": {"learning_rate": 0.01}})
    with pytest.raises(ConfigChangedError) as err:
        open_run(run_dir, changed, force=False)
    assert err.value.keys == ["seed", "train.learning_rate"]
    open_run(run_dir, resolve_config(None, {**overrides, "keep_models": "last"}), force=False)  # operational
    forced = open_run(run_dir, changed, force=True)
    assert forced.data["forced_config_changes"][0]["changed"] == ["seed", "train.learning_rate"]
    assert forced.data["config"]["seed"] == 7


def test_cli_names_the_changed_keys_and_exits_2(policy_dir, tmp_path):
    from typer.testing import CliRunner

    from cutalign.cli import _register, app

    run_dir = tmp_path / "run"
    open_run(run_dir, resolve_config(None, {"model": str(policy_dir)}), force=False)
    _register()
    result = CliRunner().invoke(app, ["online", "--model", str(policy_dir), "--run_dir", str(run_dir),
                                      "--temperature", "0.5", "--no_progress"])
    assert result.exit_code == 2
    assert "changed: temperature" in result.output and "--force" in result.output
    assert "Traceback" not in result.output


def test_bad_config_file_is_a_located_error(tmp_path):
    from typer.testing import CliRunner

    from cutalign.cli import _register, app

    config = tmp_path / "online.yaml"
    config.write_text("seed: 3\nprompts_per_iteraton: 5\n")
    _register()
    result = CliRunner().invoke(app, ["online", "--config", str(config), "--run_dir", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert f"{config}:2: field 'prompts_per_iteraton': unknown setting" in result.output


def test_every_config_key_is_a_flag():
    from typer.testing import CliRunner

    from cutalign.cli import _register, app
    from cutalign.online.config import FIELDS

    _register()
    output = CliRunner().invoke(app, ["online", "--help"], terminal_width=200, env={"COLUMNS": "200"}).output
    missing = [name for name in FIELDS if f"--{name}" not in output]
    assert not missing


def test_eval_hook_command_and_callable(tmp_path):
    import sys

    from cutalign.online.stages import run_eval_hook

    writes, prints, fails = tmp_path / "writes.py", tmp_path / "prints.py", tmp_path / "fails.py"
    writes.write_text("import json, sys\njson.dump({'accuracy': 0.5, 'name': 'x'}, open(sys.argv[1], 'w'))\n")
    prints.write_text("import sys\nprint('model', sys.argv[1])\nprint('{\"accuracy\": 0.25}')\n")
    fails.write_text("import sys\nsys.exit(3)\n")
    assert run_eval_hook(f"{sys.executable} {writes} {{output}}", tmp_path / "m", 1, tmp_path) == {"accuracy": 0.5}
    assert run_eval_hook(f"{sys.executable} {prints} {{model}}", tmp_path / "m", 1, tmp_path) == {"accuracy": 0.25}
    with pytest.raises(RuntimeError, match="exit 3"):
        run_eval_hook(f"{sys.executable} {fails}", tmp_path / "m", 1, tmp_path)
    with pytest.raises(ValueError, match="cannot import"):
        run_eval_hook("no_such_module_xyz:evaluate", tmp_path / "m", 1, tmp_path)
