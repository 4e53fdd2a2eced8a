"""Reading splits from files, saved datasets and dataset names; finding text and label columns."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pandas as pd
import pytest
from conftest import pair_rows, sentiment_rows, write_csv
from datasets import Dataset, DatasetDict

from tunesmith.config import DataConfig, load_config
from tunesmith.data import (
    Columns,
    check_texts,
    detect_columns,
    load_splits,
    read_table,
)
from tunesmith.errors import UserError

ROWS = [
    {"text": "the film was great", "label": "positive"},
    {"text": "awful plot, and sad", "label": "negative"},
    {"text": 'it is "quite" fine', "label": "positive"},
    {"text": "a poor actor", "label": "negative"},
]


def user_error(fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def as_records(ds: Dataset) -> list[dict]:
    return [dict(row) for row in ds]


# ---------------------------------------------------------------- formats


def _csv(path: Path, rows):
    return write_csv(path.with_suffix(".csv"), rows)


def _tsv(path: Path, rows):
    return write_csv(path.with_suffix(".tsv"), rows, delimiter="\t")


def _json(path: Path, rows):
    path = path.with_suffix(".json")
    pd.DataFrame(rows).to_json(path, orient="records")
    return path


def _jsonl(path: Path, rows):
    path = path.with_suffix(".jsonl")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _parquet(path: Path, rows):
    path = path.with_suffix(".parquet")
    pd.DataFrame(rows).to_parquet(path)
    return path


def _saved(path: Path, rows):
    Dataset.from_list(rows).save_to_disk(str(path))
    return path


def _saved_dict(path: Path, rows):
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(path))
    return path


WRITERS = [_csv, _tsv, _json, _jsonl, _parquet, _saved, _saved_dict]


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__name__.strip("_"))
def test_every_format_loads_the_same_rows(tmp_path, writer):
    path = writer(tmp_path / "data", ROWS)
    ds = read_table(path)
    assert sorted(ds.column_names) == ["label", "text"]
    assert as_records(ds) == ROWS


def test_extension_is_case_insensitive(tmp_path):
    path = write_csv(tmp_path / "DATA.CSV", ROWS)
    assert len(read_table(path)) == len(ROWS)


def test_tsv_keeps_commas_inside_text(tmp_path):
    rows = [{"text": "one, two, three", "label": "a"}, {"text": "four", "label": "b"}]
    assert as_records(read_table(_tsv(tmp_path / "d", rows))) == rows


# ---------------------------------------------------------------- read errors


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    msg = user_error(read_table, path)
    assert str(path) in msg and "no such file" in msg


def test_unknown_extension(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_text("text,label\na,b\n")
    msg = user_error(read_table, path)
    assert str(path) in msg and "'.xlsx'" in msg
    for ext in (".csv", ".tsv", ".json", ".jsonl", ".parquet"):
        assert ext in msg


def test_empty_file(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"")
    msg = user_error(read_table, path)
    assert str(path) in msg and "empty" in msg


@pytest.mark.parametrize(
    ("name", "content"),
    [("data.csv", "text,label\n"), ("data.tsv", "text\tlabel\n"), ("data.jsonl", "\n\n")],
)
def test_header_only_file_has_no_rows(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    msg = user_error(read_table, path)
    assert str(path) in msg and "no rows" in msg


def test_empty_json_list_has_no_rows(tmp_path):
    path = tmp_path / "data.json"
    path.write_text("[]", encoding="utf-8")
    msg = user_error(read_table, path)
    assert str(path) in msg and "no rows" in msg


def test_empty_parquet_has_no_rows(tmp_path):
    path = tmp_path / "data.parquet"
    pd.DataFrame({"text": pd.Series([], dtype=str), "label": pd.Series([], dtype=str)}).to_parquet(
        path
    )
    msg = user_error(read_table, path)
    assert str(path) in msg and "no rows" in msg


def test_empty_saved_dataset_has_no_rows(tmp_path):
    path = tmp_path / "saved"
    Dataset.from_dict({"text": [], "label": []}).save_to_disk(str(path))
    msg = user_error(read_table, path)
    assert str(path) in msg and "no rows" in msg


def test_empty_train_split_of_saved_dataset_dict(tmp_path):
    path = tmp_path / "saved"
    empty = Dataset.from_dict({"text": [], "label": []})
    DatasetDict({"train": empty, "test": Dataset.from_list(ROWS)}).save_to_disk(str(path))
    msg = user_error(read_table, path)
    assert str(path) in msg and "no rows" in msg


def test_folder_that_is_not_a_saved_dataset(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    write_csv(folder / "train.csv", ROWS)
    msg = user_error(read_table, folder)
    assert str(folder) in msg and "save_to_disk" in msg


def test_saved_dataset_dict_without_train_split(tmp_path):
    path = tmp_path / "saved"
    DatasetDict({"test": Dataset.from_list(ROWS)}).save_to_disk(str(path))
    msg = user_error(read_table, path)
    assert str(path) in msg and "'train'" in msg and "test" in msg


def test_ragged_csv_names_the_file(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\nhello,a\nbye,b,extra\nok,c\n", encoding="utf-8")
    msg = user_error(read_table, path)
    assert str(path) in msg
    assert "CSV" in msg


def test_malformed_json_names_the_file(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": \n', encoding="utf-8")
    msg = user_error(read_table, path)
    assert str(path) in msg and "JSON" in msg


def test_non_utf8_bytes_suggest_encoding_errors_replace(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes("text,label\ncafé,a\nbye,b\n".encode("latin-1"))
    msg = user_error(read_table, path)
    assert str(path) in msg
    assert "utf-8" in msg
    assert "data.encoding_errors=replace" in msg

    ds = read_table(path, encoding_errors="replace")
    assert ds["text"][0].startswith("caf") and ds["text"][1] == "bye"
    assert ds["label"] == ["a", "b"]


def test_latin1_encoding_reads_the_text_exactly(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes("text,label\ncafé,a\nbye,b\n".encode("latin-1"))
    assert read_table(path, encoding="latin-1")["text"] == ["café", "bye"]


def test_load_splits_passes_encoding_errors_through(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes("text,label\ncafé,a\nbye,b\n".encode("latin-1"))
    msg = user_error(load_splits, DataConfig(train=str(path)))
    assert "data.encoding_errors=replace" in msg
    splits = load_splits(DataConfig(train=str(path), encoding_errors="replace"))
    assert len(splits["train"]) == 2


def test_bom_and_crlf_give_clean_columns_and_values(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes("text,label\r\nhello there,a\r\nbye,b\r\n".encode("utf-8-sig"))
    ds = read_table(path)
    assert ds.column_names == ["text", "label"]
    assert ds["text"] == ["hello there", "bye"]
    assert ds["label"] == ["a", "b"]
    columns = detect_columns(ds, DataConfig(), str(path))
    assert columns == Columns(text="text", text_pair=None, label="label")


def test_bom_and_crlf_tsv(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_bytes("sentence\tlabel\r\nhi\t1\r\nho\t0\r\n".encode("utf-8-sig"))
    ds = read_table(path)
    assert ds.column_names == ["sentence", "label"]
    assert ds["sentence"] == ["hi", "ho"]
    assert ds["label"] == [1, 0]


# ---------------------------------------------------------------- load_splits


def test_load_splits_reads_train_validation_and_test(sentiment_csv, tmp_path):
    train, validation = sentiment_csv
    test = write_csv(tmp_path / "test.csv", sentiment_rows(10, seed=9))
    splits = load_splits(DataConfig(train=str(train), validation=str(validation), test=str(test)))
    assert set(splits) == {"train", "validation", "test"}
    assert [len(splits[k]) for k in ("train", "validation", "test")] == [240, 60, 10]
    assert splits["train"][0] == sentiment_rows(1, seed=1)[0]


def test_load_splits_train_only(sentiment_csv):
    splits = load_splits(DataConfig(train=str(sentiment_csv[0])))
    assert set(splits) == {"train"}


def test_load_splits_missing_validation_file_names_it(sentiment_csv, tmp_path):
    missing = tmp_path / "missing.csv"
    msg = user_error(load_splits, DataConfig(train=str(sentiment_csv[0]), validation=str(missing)))
    assert str(missing) in msg


def test_local_dataset_folder_goes_through_load_dataset(tmp_path):
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    write_csv(folder / "train.csv", sentiment_rows(12, seed=5))
    write_csv(folder / "validation.csv", sentiment_rows(4, seed=6))
    splits = load_splits(DataConfig(dataset=str(folder)))
    assert set(splits) == {"train", "validation"}
    assert len(splits["train"]) == 12 and len(splits["validation"]) == 4
    assert as_records(splits["train"]) == sentiment_rows(12, seed=5)


def test_local_dataset_folder_with_dev_split_and_file_override(tmp_path):
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    write_csv(folder / "train.csv", sentiment_rows(12, seed=5))
    write_csv(folder / "dev.csv", sentiment_rows(4, seed=6))
    own_validation = write_csv(tmp_path / "val.csv", sentiment_rows(3, seed=7))
    splits = load_splits(DataConfig(dataset=str(folder)))
    assert len(splits["validation"]) == 4
    # An explicit file wins over the dataset's split.
    splits = load_splits(DataConfig(dataset=str(folder), validation=str(own_validation)))
    assert len(splits["validation"]) == 3


def test_local_dataset_without_train_split(tmp_path):
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    write_csv(folder / "test.csv", sentiment_rows(4, seed=6))
    msg = user_error(load_splits, DataConfig(dataset=str(folder)))
    assert "no train split" in msg and "data.train" in msg


def test_unknown_dataset_name_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Both libraries read the variables at import time; make the running process offline too.
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    name = "no-such-user-tunesmith/no-such-dataset"
    msg = user_error(load_splits, DataConfig(dataset=name))
    assert f"data.dataset={name}" in msg
    assert "cannot load" in msg


# ---------------------------------------------------------------- detect_columns


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("sentence1", "sentence2"),
        ("premise", "hypothesis"),
        ("question", "passage"),
        ("question1", "question2"),
        ("text", "text_pair"),
    ],
)
def test_detects_pair_columns(first, second):
    ds = Dataset.from_dict({"idx": [0, 1], first: ["a", "b"], second: ["c", "d"], "label": [0, 1]})
    columns = detect_columns(ds, DataConfig(), "train.csv")
    assert columns == Columns(text=first, text_pair=second, label="label")
    assert columns.texts == [first, second]


@pytest.mark.parametrize("name", ["text", "sentence", "review"])
def test_detects_single_text_column(name):
    ds = Dataset.from_dict({name: ["a", "b"], "label": ["x", "y"]})
    columns = detect_columns(ds, DataConfig(), "train.csv")
    assert columns == Columns(text=name, text_pair=None, label="label")
    assert columns.texts == [name]


@pytest.mark.parametrize("label", ["label", "labels", "sentiment", "score", "target"])
def test_detects_label_column(label):
    ds = Dataset.from_dict({"sentence": ["a", "b"], label: [0, 1]})
    assert detect_columns(ds, DataConfig(), "train.csv").label == label


def test_detects_pair_from_file(pair_csv):
    ds = read_table(pair_csv[0])
    columns = detect_columns(ds, DataConfig(), str(pair_csv[0]))
    assert columns == Columns(text="sentence1", text_pair="sentence2", label="label")
    assert ds[0] == pair_rows(1, seed=3)[0]


def test_explicit_columns_win():
    ds = Dataset.from_dict({"a": ["x"], "b": ["y"], "text": ["z"], "stars": [1], "label": [0]})
    cfg = DataConfig(text_column="a", text_pair_column="b", label_column="stars")
    assert detect_columns(ds, cfg, "f") == Columns(text="a", text_pair="b", label="stars")


def test_text_pair_column_none_keeps_a_single_sentence():
    ds = Dataset.from_dict({"sentence1": ["a"], "sentence2": ["b"], "label": [0]})
    cfg = DataConfig(text_column="sentence1", text_pair_column="none")
    assert detect_columns(ds, cfg, "f") == Columns(text="sentence1", text_pair=None, label="label")
    cfg = DataConfig(text_column="sentence2", text_pair_column="None")
    assert detect_columns(ds, cfg, "f").text_pair is None


def test_text_pair_column_none_from_the_config_stops_pair_detection():
    ds = Dataset.from_dict({"text": ["a"], "text_pair": ["b"], "label": [0]})
    cfg = load_config(None, ["data.train=t.csv", "data.text_pair_column=none"]).data
    assert detect_columns(ds, cfg, "f") == Columns(text="text", text_pair=None, label="label")
    cfg = load_config(None, ["data.train=t.csv"]).data
    assert detect_columns(ds, cfg, "f").text_pair == "text_pair"


def test_explicit_text_column_skips_pair_detection():
    ds = Dataset.from_dict({"sentence1": ["a"], "sentence2": ["b"], "label": [0]})
    columns = detect_columns(ds, DataConfig(text_column="sentence2"), "f")
    assert columns.text == "sentence2" and columns.text_pair is None


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        (DataConfig(text_column="body_text"), "data.text_column=body_text"),
        (DataConfig(text_pair_column="other"), "data.text_pair_column=other"),
        (DataConfig(label_column="stars"), "data.label_column=stars"),
    ],
)
def test_configured_column_that_does_not_exist(cfg, key):
    ds = Dataset.from_dict({"text": ["a"], "label": [0], "extra": [1]})
    msg = user_error(detect_columns, ds, cfg, "data/train.csv")
    assert "data/train.csv" in msg and key in msg
    assert "columns: text, label, extra" in msg


def test_missing_text_column_lists_the_columns_found():
    ds = Dataset.from_dict({"words": ["a", "b"], "label": [0, 1]})
    msg = user_error(detect_columns, ds, DataConfig(), "data/train.csv")
    assert "data/train.csv" in msg
    assert "no text column" in msg
    assert "words, label" in msg
    assert "data.text_column=" in msg


def test_missing_label_column():
    ds = Dataset.from_dict({"text": ["a", "b"], "stars": [1, 2]})
    msg = user_error(detect_columns, ds, DataConfig(), "data/train.csv")
    assert "data/train.csv" in msg
    assert "no label column" in msg
    assert "text, stars" in msg
    assert "data.label_column=" in msg


def test_label_column_optional_for_prediction():
    ds = Dataset.from_dict({"text": ["a", "b"]})
    assert detect_columns(ds, DataConfig(), "in", need_label=False) == Columns("text", None, None)


def test_text_column_is_never_the_label():
    ds = Dataset.from_dict({"sentence": ["a"], "label": [1]})
    cfg = DataConfig(text_column="label")
    msg = user_error(detect_columns, ds, cfg, "f")
    assert "no label column" in msg


# ---------------------------------------------------------------- check_texts


def test_clean_texts_pass_unchanged():
    ds = Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]})
    assert check_texts(ds, Columns("text", None, "label"), "f", drop_empty=False) is ds


def test_empty_and_null_texts_report_rows():
    ds = Dataset.from_dict({"text": ["ok", "", None, "   ", "fine"], "label": [0, 1, 0, 1, 0]})
    msg = user_error(check_texts, ds, Columns("text", None, "label"), "data/train.csv", False)
    assert "data/train.csv" in msg
    assert "3 row(s)" in msg
    assert "rows 2, 3, 4" in msg
    assert "data.drop_empty=true" in msg


def test_empty_texts_in_either_pair_column():
    ds = Dataset.from_dict(
        {"sentence1": ["a", "", "c"], "sentence2": ["x", "y", None], "label": [0, 1, 0]}
    )
    columns = Columns("sentence1", "sentence2", "label")
    msg = user_error(check_texts, ds, columns, "f", False)
    assert "rows 2, 3" in msg and "sentence1/sentence2" in msg
    kept = check_texts(ds, columns, "f", drop_empty=True)
    assert kept["sentence1"] == ["a"]


def test_many_empty_rows_are_elided():
    ds = Dataset.from_dict({"text": [""] * 12 + ["a"], "label": [0] * 13})
    msg = user_error(check_texts, ds, Columns("text", None, "label"), "f", False)
    assert "12 row(s)" in msg and "rows 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 ..." in msg


def test_drop_empty_drops_those_rows():
    ds = Dataset.from_dict({"text": ["ok", "", None, "fine"], "label": [0, 1, 0, 1]})
    kept = check_texts(ds, Columns("text", None, "label"), "f", drop_empty=True)
    assert as_records(kept) == [{"text": "ok", "label": 0}, {"text": "fine", "label": 1}]


def test_drop_empty_with_nothing_left():
    ds = Dataset.from_dict({"text": ["", None], "label": [0, 1]})
    msg = user_error(check_texts, ds, Columns("text", None, "label"), "data/x.csv", True)
    assert "data/x.csv" in msg and "every row" in msg


def test_empty_cells_from_a_csv_file(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\nhello,a\n,b\nbye,a\n", encoding="utf-8")
    ds = read_table(path)
    columns = detect_columns(ds, DataConfig(), str(path))
    msg = user_error(check_texts, ds, columns, str(path), False)
    assert str(path) in msg and "rows 2," in msg
    assert check_texts(ds, columns, str(path), True)["text"] == ["hello", "bye"]
