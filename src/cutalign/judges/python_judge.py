"""Programmatic judges: a Python function decides (verifiable tasks, the demo's fact world).

`--judge python:package.module:function` or `--judge python:path/to/file.py:function` names a
function `f(prompt, completion)` or `f(prompt, completion, row)` (row: the whole input row) that
returns a `Judgment`, a dict of its fields, `(text, satisfactory[, score])`, or a string / None
(a judgment text; None means satisfactory). An exception in the function becomes an error row
(`error="judge_exception"`), counted like any other failure.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cutalign.judges.base import Judgment, Prompt
from cutalign.judges.prompts import UNPARSEABLE

JudgeFunction = Callable[..., Any]


def demo_judge_function() -> JudgeFunction:
    """The lab's programmatic judge over the demo world (`--judge demo`): the one adapter to change when
    that module moves. It returns a `Judgment` with gold `error_spans`; questions outside the world
    come back unparseable."""
    from cutalign.lab.judge import judge_response

    def judge(prompt: Prompt, completion: str) -> Judgment:
        return judge_response(prompt, completion)

    return judge


def load_function(spec: str) -> JudgeFunction:
    """`module:function` or `path/to/file.py:function` -> the function (clear errors for bad specs)."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ValueError(f"python judge {spec!r}: expected 'module:function' or 'path/file.py:function'")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ValueError(f"python judge {spec!r}: no such file {path}")
        module_spec = importlib.util.spec_from_file_location(f"cutalign_user_judge_{path.stem}", path)
        if module_spec is None or module_spec.loader is None:
            raise ValueError(f"python judge {spec!r}: cannot import {path}")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as err:
            raise ValueError(f"python judge {spec!r}: cannot import module {target!r}: {err}") from err
    function = getattr(module, attr, None)
    if not callable(function):
        raise ValueError(f"python judge {spec!r}: {target} has no function {attr!r}")
    return function


def _takes_row(function: JudgeFunction) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in parameters)


def to_judgment(value: Any) -> Judgment:
    """A function's return value as a `Judgment`; a value of the wrong shape is unparseable (kept in raw)."""
    if isinstance(value, Judgment):
        return value
    if value is None:
        return Judgment(text=None, satisfactory=True)
    if isinstance(value, str):
        return Judgment(text=value, satisfactory=False, raw=value) if value.strip() else _bad(value)
    if isinstance(value, Mapping):
        try:
            return _checked(Judgment(**dict(value)))
        except TypeError:
            return _bad(value)
    if isinstance(value, tuple) and len(value) in (2, 3):
        text, satisfactory, *score = value
        return _checked(Judgment(text=text, satisfactory=satisfactory, score=score[0] if score else None))
    return _bad(value)


def _checked(judgment: Judgment) -> Judgment:
    ok_types = (isinstance(judgment.text, str | None) and isinstance(judgment.satisfactory, bool | None)
                and (judgment.score is None or isinstance(judgment.score, int | float)))
    if not ok_types or (judgment.error is None and judgment.satisfactory is None):
        return _bad(judgment)
    if judgment.satisfactory is False and judgment.error is None and not (judgment.text or "").strip():
        return _bad(judgment)  # a negative verdict must say what is wrong
    if judgment.score is not None:
        judgment.score = float(judgment.score)
    return judgment


def _bad(value: Any) -> Judgment:
    return Judgment(text=None, satisfactory=None, raw=repr(value), error=UNPARSEABLE)


class PythonJudge:
    """Calls `function` once per row; `name` is the spec it was loaded from."""

    kind = "python"

    def __init__(self, function: JudgeFunction, name: str) -> None:
        self.function = function
        self.name = name
        self._takes_row = _takes_row(function)

    @classmethod
    def from_spec(cls, spec: str) -> PythonJudge:
        """`demo`, or `module:function` / `file.py:function` (with or without the `python:` prefix)."""
        if spec == "demo":
            return cls(demo_judge_function(), "demo")
        spec = spec.removeprefix("python:")
        return cls(load_function(spec), f"python:{spec}")

    @property
    def metadata(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.name}

    def judge(self, prompts: Sequence[Prompt], completions: Sequence[str],
              rows: Sequence[Mapping[str, Any]] | None = None) -> list[Judgment]:
        out = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            args = (prompt, completion, rows[i] if rows is not None else {}) if self._takes_row else (prompt, completion)
            try:
                out.append(to_judgment(self.function(*args)))
            except Exception as err:  # the user's code: any failure is this row's error, counted
                out.append(Judgment(None, None, raw=f"{type(err).__name__}: {err}", error="judge_exception"))
        return out
