"""Reading and writing canonical judged data: JSON, JSONL, Parquet, folders, and `datasets`.

Every record keeps its file and line so that a malformed one is reported where the user can
find it; everything goes through :func:`~cutalign.data.schema.canonical_examples`. Whatever the
bytes, reading raises :class:`~cutalign.data.schema.DataError` and nothing else: unreadable files,
invalid UTF-8, nesting too deep for Python, integers too long to parse. A UTF-8 byte order mark
(as Windows tools write) is accepted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import datasets

from cutalign.data.report import DropReport
from cutalign.data.schema import (
    FIELDS,
    DataError,
    ExtraFields,
    Located,
    PolarityRule,
    SourceRecord,
    canonical_examples,
    location,
)

SUPPORTED_SUFFIXES = (".json", ".jsonl", ".parquet")
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _json_error(source: str, err: json.JSONDecodeError, line_offset: int = 0) -> DataError:
    return DataError(source, err.lineno + line_offset, None, f"invalid JSON: {err.msg} (column {err.colno})")


def _parse_error(source: str, line: int | None, err: Exception) -> DataError:
    """JSON that Python's parser cannot hold: nesting deeper than the recursion limit, or an integer
    of more than 4300 digits (a ValueError that is not a JSONDecodeError)."""
    if isinstance(err, RecursionError):
        return DataError(source, line, None, "invalid JSON: nested too deeply to read")
    return DataError(source, line, None, f"invalid JSON: {err}")


def _jsonl_records(text: str, source: str) -> Iterator[SourceRecord]:
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: it splits at U+2028 too
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise _json_error(source, err, line_offset=number - 1) from err
        except (RecursionError, ValueError) as err:
            raise _parse_error(source, number, err) from err
        yield SourceRecord(value, source, number)


def _array_records(text: str, source: str) -> Iterator[SourceRecord]:
    """The elements of a (valid) JSON array, each with the line where it starts."""
    decoder = json.JSONDecoder()
    pos = _WHITESPACE.match(text, text.index("[") + 1).end()
    line, counted_to = 1, 0
    while text[pos] != "]":
        try:
            value, end = decoder.raw_decode(text, pos)
        except (RecursionError, ValueError) as err:  # json.loads read it already; belt and braces
            raise _parse_error(source, line + text.count("\n", counted_to, pos), err) from err
        line, counted_to = line + text.count("\n", counted_to, pos), pos
        yield SourceRecord(value, source, line)
        pos = _WHITESPACE.match(text, end).end()
        if text[pos] == ",":
            pos = _WHITESPACE.match(text, pos + 1).end()


def _json_records(path: Path, source: str) -> Iterator[SourceRecord]:
    """A .jsonl file, or a .json file holding an array, one object, or (auto-detected) JSONL."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a leading byte order mark is skipped
    except UnicodeDecodeError as err:
        raise DataError(source, None, None, f"not UTF-8 text: {err}") from err
    except OSError as err:
        raise DataError(source, None, None, f"cannot read: {err.strerror or err}") from err
    if path.suffix == ".jsonl":
        yield from _jsonl_records(text, source)
        return
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # several top-level values: object-per-line JSONL
            yield from _jsonl_records(text, source)
            return
        raise _json_error(source, err) from err
    except (RecursionError, ValueError) as err:
        raise _parse_error(source, None, err) from err
    if isinstance(value, list):
        yield from _array_records(text, source)
    elif isinstance(value, dict):
        yield SourceRecord(value, source, text.count("\n", 0, len(text) - len(text.lstrip())) + 1)
    else:
        raise DataError(source, None, None, f"expected a JSON array or object, got {type(value).__name__}")


def _parquet_records(path: Path, source: str) -> Iterator[SourceRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches()
        row = 0
        for batch in batches:
            for record in batch.to_pylist():
                row += 1
                yield SourceRecord(record, source, row)
    except (pa.ArrowException, OSError) as err:
        raise DataError(source, None, None, f"unreadable Parquet file: {err}") from err


def _file_records(path: Path) -> Iterator[SourceRecord]:
    source = str(path)
    if path.suffix == ".parquet":
        return _parquet_records(path, source)
    if path.suffix in (".json", ".jsonl"):
        return _json_records(path, source)
    raise DataError(
        source, None, None, f"unsupported file type (expected one of {', '.join(SUPPORTED_SUFFIXES)})"
    )


def read_records(path: str | Path) -> Iterator[SourceRecord]:
    """Raw records of a file, or of every supported file directly in a folder (sorted by name)."""
    path = Path(path)
    if path.is_dir():
        files = _data_files(path)
        if not files:
            raise DataError(str(path), None, None, f"folder holds no {', '.join(SUPPORTED_SUFFIXES)} files")
        return chain.from_iterable(_file_records(p) for p in files)
    if not path.exists():
        raise DataError(str(path), None, None, "no such file or folder")
    return _file_records(path)


def _data_files(folder: Path) -> list[Path]:
    """Supported files directly in ``folder``, sorted by name (hidden files left out)."""
    try:
        return sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and p.suffix in SUPPORTED_SUFFIXES and not p.name.startswith(".")
        )
    except OSError as err:
        raise DataError(str(folder), None, None, f"cannot read folder: {err.strerror or err}") from err


def _is_saved_dataset(path: Path) -> bool:
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def _looks_like_path(name: str) -> bool:
    return Path(name).suffix in SUPPORTED_SUFFIXES or name.startswith(("/", ".", "~"))


def _dataset_records(name: str, split: str) -> Iterator[SourceRecord]:
    """Rows of a saved dataset (``load_from_disk``), or of a `datasets` id or data folder
    (``load_dataset``, streamed: rows are read once, in order, so nothing is downloaded first)."""
    try:
        if _is_saved_dataset(Path(name)):
            loaded = datasets.load_from_disk(name)
        else:
            loaded = datasets.load_dataset(name, split=split, streaming=True)
    except Exception as err:  # datasets raises many kinds; all mean "cannot load this source"
        raise DataError(
            name, None, None, f"not a file or folder, and `datasets` cannot load it: {_short(err)}"
        ) from err
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(name, None, None, f"no split {split!r} (it has {', '.join(loaded)})")
        loaded = loaded[split]
    return _rows(loaded, name, f"{name}[{split}]")


def _rows(loaded: Iterable[Any], name: str, source: str) -> Iterator[SourceRecord]:
    rows = iter(loaded)
    number = 0
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as err:  # a streamed source fails while reading (network, corrupt shard)
            raise DataError(source, number + 1, None, f"`datasets` cannot read this row: {_short(err)}") from err
        number += 1
        yield SourceRecord(row, source, number)


def _short(err: Exception) -> str:
    """The first line of an error (hub errors run to dozens of lines)."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def source_records(source: str | Path, split: str = "train") -> Iterator[SourceRecord]:
    """Raw records of one source: a file, a folder of files, a saved dataset, a `datasets` data
    folder (data files in subfolders) or a `datasets` id. A name that does not exist and looks like
    a path is never sent to the hub."""
    path = Path(source)
    try:
        is_dir = path.is_dir()
        if is_dir and (_is_saved_dataset(path) or not _data_files(path)):
            return _dataset_records(str(source), split)
        if is_dir or path.exists() or _looks_like_path(str(source)):
            return read_records(path)
    except OSError as err:
        raise DataError(str(source), None, None, f"cannot read: {err.strerror or err}") from err
    return _dataset_records(str(source), split)


def canonical_features(conversational: bool) -> datasets.Features:
    """Arrow types of the canonical columns; a column holds one type, hence the prompt flag."""
    text = datasets.Value("string")
    message = {"role": text, "content": text}
    return datasets.Features(
        {
            "id": text,
            "prompt": datasets.List(message) if conversational else text,
            "completion": text,
            "judgment": text,
            "label": datasets.Value("bool"),
            "score": datasets.Value("float64"),
            "refinement": text,
        }
    )


def to_dataset(located: Sequence[Located]) -> datasets.Dataset:
    """A `datasets.Dataset` of canonical examples; mixed string/conversational prompts are an error."""
    conversational = bool(located) and isinstance(located[0].example["prompt"], list)
    for item in located:
        if isinstance(item.example["prompt"], list) != conversational:
            first = location(located[0].source, located[0].line)
            kinds = ("a message list", "a string") if conversational else ("a string", "a message list")
            raise DataError(
                item.source,
                item.line,
                "prompt",
                f"is {kinds[1]} but {first} has {kinds[0]}; one dataset cannot mix string and "
                "conversational prompts (Arrow needs one type per column)",
            )
    columns = {key: [item.example[key] for item in located] for key in FIELDS}
    return datasets.Dataset.from_dict(columns, features=canonical_features(conversational))


def load_judged_dataset(
    source: str | Path | Sequence[str | Path],
    *,
    rule: PolarityRule | None = None,
    split: str = "train",
    extra_fields: ExtraFields = "error",
) -> tuple[datasets.Dataset, DropReport]:
    """Canonical judged data from files, folders, saved datasets or `datasets` ids, and what was dropped.

    A name that exists on disk is read as a file/folder (or with ``load_from_disk`` when it is a
    saved dataset); any other name that does not look like a path goes to ``load_dataset``.
    Duplicates are detected across all sources together. Unknown fields are an error unless
    ``extra_fields="ignore"``. (:func:`~cutalign.data.converters.load_judged` wraps this in a
    :class:`JudgedData`.)
    """
    sources = [source] if isinstance(source, str | Path) else list(source)
    report = DropReport()
    for s in sources:
        report.add_source(str(s))
    records = chain.from_iterable(source_records(s, split) for s in sources)
    located = list(canonical_examples(records, rule or PolarityRule(), report, extra_fields))
    return to_dataset(located), report


@dataclass
class JudgedData:
    """Loaded judged data that carries what happened to it, so drops reach every later report.

    Pass it where a dataset is expected (trainers, :func:`cutalign.api.train`): its ``report`` is
    merged into theirs, so the model card counts the loading drops without manual merging.
    """

    dataset: datasets.Dataset
    report: DropReport

    @property
    def examples(self) -> list[dict[str, Any]]:
        """The canonical examples as plain dicts."""
        return self.dataset.to_list()

    @property
    def sources(self) -> list[str]:
        return self.report.sources

    @property
    def notices(self) -> dict[str, int]:
        return self.report.notices_dict()

    def __len__(self) -> int:
        return len(self.dataset)

    def describe(self) -> str:
        """E.g. ``kept 951 of 1000 (49 judge errors)``."""
        return self.report.describe(len(self.dataset))


def unwrap_judged(data: Any, report: DropReport) -> Any:
    """``data``'s dataset with its drops merged into ``report`` when it is :class:`JudgedData`;
    anything else unchanged (for trainers that accept both)."""
    if isinstance(data, JudgedData):
        report.merge(data.report)
        return data.dataset
    return data


def write_jsonl(examples: Iterable[Mapping[str, Any]], path: str | Path) -> int:
    """Write one JSON object per line (UTF-8, non-ASCII kept) atomically: a failure (disk full, no
    permission) leaves an earlier file untouched and no partial one. Returns the number written."""
    from cutalign.files import atomic_write_jsonl

    return atomic_write_jsonl(path, (dict(example) for example in examples))
