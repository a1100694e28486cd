"""Loaders and writer: file formats, line numbers, datasets, Arrow types, round trips."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cutalign.data.io import load_judged_dataset, read_records, write_jsonl
from cutalign.data.schema import FIELDS, DataError, validate_record

CHAT = [{"role": "user", "content": "Hi?"}]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def records_of(path: Path) -> list[tuple[object, int | None]]:
    return [(r.raw, r.line) for r in read_records(path)]


def test_json_array_elements_carry_the_line_where_they_start(tmp_path):
    path = write(tmp_path / "a.json", '[\n  {"a": 1},\n\n  {"a": [2,\n 3]}, {"a": 4}\n]\n')
    assert records_of(path) == [({"a": 1}, 2), ({"a": [2, 3]}, 4), ({"a": 4}, 5)]
    assert records_of(write(tmp_path / "e.json", " [ ] ")) == []


def test_json_file_with_one_object_or_jsonl_content(tmp_path):
    assert records_of(write(tmp_path / "one.json", '\n\n{"a": 1}')) == [({"a": 1}, 3)]
    assert records_of(write(tmp_path / "lines.json", '{"a": 1}\n\n{"a": 2}\n')) == [
        ({"a": 1}, 1),
        ({"a": 2}, 3),
    ]
    with pytest.raises(DataError, match="expected a JSON array or object, got int"):
        records_of(write(tmp_path / "n.json", "3"))


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("bad.jsonl", '{"a": 1}\n{"a": 2,}\n', 2),
        ("bad.json", '[\n {"a": 1},\n {"a" 2}\n]', 3),
        ("bad2.json", '{"a": 1}\n{"a": 2}\n{oops}\n', 3),
    ],
)
def test_invalid_json_names_file_and_line(tmp_path, name, text, line):
    path = write(tmp_path / name, text)
    with pytest.raises(DataError) as info:
        records_of(path)
    assert (info.value.source, info.value.line) == (str(path), line)
    assert info.value.message.startswith("invalid JSON: ")


def test_parquet_rows_are_numbered(tmp_path):
    pq.write_table(pa.table({"prompt": ["Q1", "Q2"], "completion": ["A1", "A2"]}), tmp_path / "d.parquet")
    assert records_of(tmp_path / "d.parquet") == [
        ({"prompt": "Q1", "completion": "A1"}, 1),
        ({"prompt": "Q2", "completion": "A2"}, 2),
    ]
    with pytest.raises(DataError, match="unreadable Parquet file"):
        records_of(write(tmp_path / "broken.parquet", "not parquet"))


def test_folder_reads_supported_files_sorted(tmp_path):
    write(tmp_path / "b.jsonl", '{"n": 2}\n')
    write(tmp_path / "a.json", '[{"n": 1}]')
    write(tmp_path / "notes.txt", "ignored")
    write(tmp_path / ".hidden.jsonl", '{"n": 0}\n')
    assert [(Path(r.source).name, r.raw["n"]) for r in read_records(tmp_path)] == [
        ("a.json", 1),
        ("b.jsonl", 2),
    ]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: d / "missing.jsonl", "no such file or folder"),
        (lambda d: write(d / "x.csv", "a,b"), "unsupported file type"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "folder holds no"),
        (
            lambda d: d.joinpath("latin.jsonl").write_bytes(b'{"a": "\xe9"}\n') and d / "latin.jsonl",
            "not UTF-8",
        ),
    ],
)
def test_unreadable_sources_raise(tmp_path, setup, message):
    path = setup(tmp_path)
    with pytest.raises(DataError, match=message) as info:
        records_of(path)
    assert info.value.source == str(path)


def test_load_judged_dataset_types_and_drops(tmp_path):
    rows = [
        {"id": 1, "prompt": "Q1", "completion": "A1", "judgment": None},
        {"id": 2, "prompt": "Q2", "completion": "A2", "judgment": "Wrong.", "score": 2, "refinement": "B2"},
        {"id": 3, "prompt": "Q3", "completion": "A3", "judgment": "$ERROR$"},
    ]
    path = write(tmp_path / "d.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    dataset, report = load_judged_dataset(path)
    assert isinstance(dataset, datasets.Dataset)
    assert list(dataset.features) == list(FIELDS)
    assert dataset.features["prompt"] == datasets.Value("string")
    assert dataset.features["score"] == datasets.Value("float64")
    assert dataset.to_list() == [
        {
            "id": "1",
            "prompt": "Q1",
            "completion": "A1",
            "judgment": None,
            "label": True,
            "score": None,
            "refinement": None,
        },
        {
            "id": "2",
            "prompt": "Q2",
            "completion": "A2",
            "judgment": "Wrong.",
            "label": False,
            "score": 2.0,
            "refinement": "B2",
        },
    ]
    assert report.as_dict() == {"judge_error": 1}


def test_conversational_dataset_and_duplicates_across_sources(tmp_path):
    row = {"prompt": CHAT, "completion": "Hello.", "judgment": "Rude."}
    first = write(tmp_path / "a.jsonl", json.dumps(row) + "\n")
    second = write(tmp_path / "b.jsonl", json.dumps({**row, "id": "x"}) + "\n")
    dataset, report = load_judged_dataset([first, str(second)])
    assert dataset.features["prompt"] == datasets.List(
        {"role": datasets.Value("string"), "content": datasets.Value("string")}
    )
    assert dataset[0]["prompt"] == CHAT
    assert report.as_dict() == {"duplicate": 1}


def test_mixed_prompt_types_name_the_first_offending_line(tmp_path):
    lines = [
        {"prompt": CHAT, "completion": "A"},
        {"prompt": CHAT, "completion": "B"},
        {"prompt": "plain", "completion": "C"},
        {"prompt": "plain", "completion": "D"},
    ]
    path = write(tmp_path / "mixed.jsonl", "".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(DataError) as info:
        load_judged_dataset(path)
    assert (info.value.line, info.value.field) == (3, "prompt")
    assert f"is a string but {path}:1 has a message list" in info.value.message


def test_empty_source_gives_empty_typed_dataset(tmp_path):
    dataset, report = load_judged_dataset(write(tmp_path / "d.jsonl", "\n"))
    assert len(dataset) == 0 and list(dataset.features) == list(FIELDS) and not report


def test_saved_dataset_folder_and_split(tmp_path):
    rows = {"prompt": ["Q"], "completion": ["A"], "judgment": ["Bad."], "label": [None]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(tmp_path / "dd")
    dataset, _ = load_judged_dataset(tmp_path / "dd")
    assert dataset[0]["judgment"] == "Bad." and dataset[0]["label"] is False
    with pytest.raises(DataError, match="no split 'test' \\(it has train\\)"):
        load_judged_dataset(tmp_path / "dd", split="test")


def test_datasets_data_folder_and_unreachable_hub_id(tmp_path, monkeypatch):
    """A folder in the `datasets` layout (data files in subfolders, no script) goes to load_dataset;
    a hub id that cannot be reached is a DataError at once (offline here: no hub in tests)."""
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    (tmp_path / "hub" / "data").mkdir(parents=True)
    write(tmp_path / "hub" / "data" / "validation.jsonl", json.dumps({"prompt": "Q", "judgment": "J"}) + "\n")
    write(tmp_path / "hub" / "data" / "train.jsonl", json.dumps({"prompt": "Q", "completion": "A"}) + "\n")
    dataset, _ = load_judged_dataset(tmp_path / "hub")
    assert dataset["completion"] == ["A"]
    with pytest.raises(DataError) as info:
        load_judged_dataset(tmp_path / "hub", split="validation")
    # The split's files disagree with train's columns: `datasets` fails mid-stream, still a DataError.
    assert str(info.value).startswith(f"{tmp_path / 'hub'}[validation]:1: `datasets` cannot read this row")
    start = time.perf_counter()
    with pytest.raises(DataError, match="org/missing: not a file or folder, and `datasets` cannot load it"):
        load_judged_dataset("org/missing")
    assert time.perf_counter() - start < 5
    with pytest.raises(DataError, match="no such file"):
        load_judged_dataset("missing/data.jsonl")  # looks like a path: never sent to the hub


def test_every_converter_reads_saved_datasets(tmp_path):
    """Converter formats read `datasets` sources too (a saved dataset here, as load_from_disk reads it)."""
    from cutalign.data.converters import convert

    rows = [json.loads(line) for line in (FIXTURES / "ultrafeedback.jsonl").read_text().splitlines()][:1]
    datasets.Dataset.from_list(rows).save_to_disk(tmp_path / "uf")
    examples, _ = convert("ultrafeedback", [tmp_path / "uf"])
    assert [e["id"] for e in examples] == ["1-0", "1-1", "1-2"]
    alpaca = [{"id": 1, "instruction": "Q", "input": "", "output": "A", "judgment": "Bad."}]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(alpaca)}).save_to_disk(tmp_path / "alpaca")
    examples, _ = convert("cut-alpaca", [tmp_path / "alpaca"])
    assert examples[0]["judgment"] == "Bad." and examples[0]["label"] is False


text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
nonblank = text.filter(lambda s: s.strip() != "")
messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": text}),
    max_size=3,
).map(lambda m: [*m, {"role": "user", "content": "?"}])
canonical = st.fixed_dictionaries(
    {
        "id": st.none() | text,
        "prompt": text | messages,
        "completion": text,
        "judgment": st.none() | text,
        "label": st.booleans(),
        "score": st.none() | st.floats(allow_nan=False, allow_infinity=False),
        "refinement": st.none() | text,
    }
).filter(lambda e: e["label"] or e["judgment"] is not None)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(examples=st.lists(canonical, max_size=5))
def test_written_canonical_records_validate_back_unchanged(tmp_path, examples):
    path = tmp_path / "round.jsonl"
    assert write_jsonl(examples, path) == len(examples)
    back = [validate_record(r.raw, source=r.source, line=r.line) for r in read_records(path)]
    assert back == examples
    assert [r.line for r in read_records(path)] == list(range(1, len(examples) + 1))
