"""Crash-safe file writing: every file cutalign writes goes through here.

Two ways, and only these two:
- `atomic_write_*`: write a temporary file in the same folder, fsync, then rename over the
  target. A crash at any moment leaves the old file or the new one, never a mix or a 0-byte file.
- `ResumableJSONL`: append-only JSONL keyed by a row key (an example id, or a content hash).
  Each batch is flushed and fsynced before the next starts; on reopen, a last line cut by a
  crash is discarded, the keys already written are known, and the caller skips them. This is
  how `generate`, `refine`, `judge` and the online loop never redo (or pay twice for) a row.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` atomically (same-folder temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, value: Any, *, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(value, indent=indent, ensure_ascii=False, default=str) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write all rows at once, atomically; returns the number written."""
    lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in rows]
    atomic_write_text(path, "".join(lines))
    return len(lines)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


class ForeignOutputError(ValueError):
    """The output file holds rows that do not belong to this input: refuse rather than mix."""


class ResumableJSONL:
    """Append-only JSONL whose rows are identified by `key(row)`.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "out.jsonl"
    >>> with ResumableJSONL(path, key=lambda r: r["id"]) as out:
    ...     out.append([{"id": 1}, {"id": 2}])
    2
    >>> _ = path.open("a").write('{"id": 3')          # a crash in the middle of a row
    >>> out = ResumableJSONL(path, key=lambda r: r["id"])
    >>> sorted(out.done), out.discarded_partial_line
    ([1, 2], True)
    """

    def __init__(
        self,
        path: str | Path,
        key: Callable[[Mapping[str, Any]], Any],
        *,
        allowed_keys: Iterable[Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.key = key
        self.discarded_partial_line = False
        self.done: set[Any] = set()
        self._file: Any = None
        self._load(None if allowed_keys is None else set(allowed_keys))

    # reading what is there ------------------------------------------------------------------
    def _load(self, allowed: set[Any] | None) -> None:
        if not self.path.is_file():
            return
        self.discarded_partial_line = _repair_last_line(self.path)
        for number, row in self._rows():
            try:
                row_key = self.key(row)
            except (KeyError, TypeError, ValueError) as err:
                raise ForeignOutputError(f"{self.path}:{number}: not a row written by this command ({err})") from err
            if allowed is not None and row_key not in allowed:
                raise ForeignOutputError(
                    f"{self.path}:{number}: row {row_key!r} is not in the input; the output file belongs to "
                    "other data (choose a new output path)")
            self.done.add(row_key)

    def _rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        with self.path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ForeignOutputError(f"{self.path}:{number}: not JSON ({err.msg})") from err
                if not isinstance(row, dict):
                    raise ForeignOutputError(f"{self.path}:{number}: not a JSON object")
                yield number, row

    def rows(self) -> list[dict[str, Any]]:
        """Every complete row in the file, in file order."""
        if not self.path.is_file():
            return []
        return [row for _, row in self._rows()]

    # appending ------------------------------------------------------------------------------
    def __contains__(self, row_key: Any) -> bool:
        return row_key in self.done

    def append(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append a batch and make it durable (flush + fsync) before returning. Rows whose key is
        already written are skipped (returned count excludes them)."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        written = 0
        for row in rows:
            row_key = self.key(row)
            if row_key in self.done:
                continue
            self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
            self.done.add(row_key)
            written += 1
        self._file.flush()
        os.fsync(self._file.fileno())
        return written

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> ResumableJSONL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _repair_last_line(path: Path) -> bool:
    """Cut a last line left incomplete by a crash; True when something was discarded."""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    keep = data.rfind(b"\n") + 1
    try:
        json.loads(data[keep:])
    except ValueError:
        logger.warning("%s: discarding an incomplete last line (an interrupted run)", path)
        with path.open("r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        return True
    with path.open("ab") as f:  # a complete row that only lacks its newline
        f.write(b"\n")
    return False
