"""Bad input through the real CLI: one stderr line naming the culprit, exit 2, no finished run."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import own_caches, sentiment_rows, write_csv

from tunesmith.cli import main


def fails(capsys, args: list[str], *expected: str) -> str:
    capsys.readouterr()  # drop what the test's own setup printed
    assert main(args) == 2
    *status, err = capsys.readouterr().err.strip().splitlines()
    assert err.startswith("tunesmith: error: "), err
    assert all(line.startswith("tunesmith: ") for line in status), status  # no traceback
    for text in expected:
        assert text in err, err
    return err


def assert_no_finished_run(out: Path) -> None:
    assert not (out / "metrics.json").exists() and not (out / "model").exists()


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "run"


def test_missing_file(capsys, tiny_model, out, tmp_path):
    fails(
        capsys,
        ["train", f"model={tiny_model}", f"data.train={tmp_path}/nope.csv", f"output_dir={out}"],
        "nope.csv",
        "no such file",
    )
    assert_no_finished_run(out)


def test_ragged_csv(capsys, tiny_model, out, tmp_path):
    bad = tmp_path / "ragged.csv"
    bad.write_text("text,label\ngood film,positive\nbad,film,negative,extra\n")
    fails(
        capsys,
        ["train", f"model={tiny_model}", f"data.train={bad}", f"output_dir={out}"],
        "ragged.csv",
    )
    assert_no_finished_run(out)


def test_missing_label_column_lists_columns(capsys, tiny_model, out, tmp_path):
    data = write_csv(
        tmp_path / "t.csv", [{"text": r["text"], "stars": 1} for r in sentiment_rows(20)]
    )
    fails(
        capsys,
        ["train", f"model={tiny_model}", f"data.train={data}", f"output_dir={out}"],
        "no label column",
        "text, stars",
        "data.label_column",
    )
    assert_no_finished_run(out)


def test_empty_text_cells_name_rows(capsys, tiny_model, out, tmp_path):
    rows = sentiment_rows(20)
    rows[3]["text"] = ""
    data = write_csv(tmp_path / "t.csv", rows)
    fails(
        capsys,
        ["train", f"model={tiny_model}", f"data.train={data}", f"output_dir={out}"],
        "rows 4",
        "data.drop_empty=true",
    )
    assert_no_finished_run(out)


def test_unseen_validation_label(capsys, tiny_model, out, sentiment_csv, tmp_path):
    train, _ = sentiment_csv
    rows = sentiment_rows(10)
    rows[2]["label"] = "neutral"
    validation = write_csv(tmp_path / "v.csv", rows)
    fails(
        capsys,
        [
            "train",
            f"model={tiny_model}",
            f"data.train={train}",
            f"data.validation={validation}",
            f"output_dir={out}",
        ],
        "'neutral'",
        "rows 3",
    )
    assert_no_finished_run(out)


def test_single_class(capsys, tiny_model, out, tmp_path):
    data = write_csv(
        tmp_path / "t.csv", [{"text": r["text"], "label": "positive"} for r in sentiment_rows(20)]
    )
    fails(
        capsys,
        ["train", f"model={tiny_model}", f"data.train={data}", f"output_dir={out}"],
        "single class",
    )
    assert_no_finished_run(out)


def test_nan_regression_labels(capsys, tiny_model, out, tmp_path):
    data = tmp_path / "t.csv"
    data.write_text("text,score\ngood film,4.5\nbad film,\nfine film,3.2\n")
    fails(
        capsys,
        [
            "train",
            f"model={tiny_model}",
            f"data.train={data}",
            "task=regression",
            f"output_dir={out}",
        ],
        "score",
        "rows 2",
    )
    assert_no_finished_run(out)


def test_config_typo_and_wrong_type(capsys, out, sentiment_csv):
    train, _ = sentiment_csv
    fails(capsys, ["train", f"data.train={train}", "train.epoch=3"], "did you mean train.epochs")
    fails(capsys, ["train", f"data.train={train}", "train.max_steps=many"], "train.max_steps")


def test_model_folder_missing(capsys, out, sentiment_csv, tmp_path):
    train, _ = sentiment_csv
    fails(
        capsys,
        ["train", f"model={tmp_path}/no-model", f"data.train={train}", f"output_dir={out}"],
        "no-model",
        "no such model folder",
    )
    assert_no_finished_run(out)


def test_model_without_classification_head(capsys, tiny_model, out, sentiment_csv, tmp_path):
    from transformers import AutoTokenizer, CLIPVisionConfig, CLIPVisionModel

    folder = tmp_path / "vision"
    CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=8,
            patch_size=4,
        )
    ).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    train, _ = sentiment_csv
    fails(
        capsys,
        ["train", f"model={folder}", f"data.train={train}", f"output_dir={out}"],
        f"model={folder}",
    )
    assert_no_finished_run(out)


def test_finished_run_is_not_overwritten(capsys, tiny_model, sentiment_csv, out):
    train, validation = sentiment_csv
    args = [
        "train",
        f"model={tiny_model}",
        f"data.train={train}",
        f"data.validation={validation}",
        f"output_dir={out}",
        "train.max_steps=1",
    ]
    assert main(args) == 0
    fails(capsys, args, "already holds a finished run", "overwrite=true")
    assert main([*args, "overwrite=true"]) == 0


def test_predict_on_a_folder_that_is_not_a_model(capsys, tmp_path):
    fails(capsys, ["predict", str(tmp_path), "--data", str(tmp_path / "x.csv")], "not a model")


# ---- the slips of issue 17: each once seen as a traceback, a silent loss or a wrong hint ----


def finished_then_cut_short(tiny_model, sentiment_csv, out) -> list[str]:
    """A run with step checkpoints whose export was removed: what Ctrl-C leaves behind."""
    train, validation = sentiment_csv
    args = [
        "train",
        f"model={tiny_model}",
        f"data.train={train}",
        f"data.validation={validation}",
        f"output_dir={out}",
        "train.max_steps=2",
        "checkpoint.every_steps=1",
    ]
    assert main(args) == 0
    shutil.rmtree(out / "model")
    (out / "metrics.json").unlink()
    return args


def test_an_unfinished_run_is_not_restarted_over(capsys, tiny_model, sentiment_csv, out):
    args = finished_then_cut_short(tiny_model, sentiment_csv, out)
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    fails(capsys, args, "unfinished run", "step-00000002", "--resume auto", "overwrite=true")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before


@pytest.mark.parametrize("where", ["file", "uncreatable"])
def test_output_dir_that_cannot_hold_a_run(capsys, tiny_model, sentiment_csv, tmp_path, where):
    train, _ = sentiment_csv
    if where == "file":
        target = tmp_path / "taken"
        target.write_text("mine")
        expected = "is a file"
    else:
        target = Path("/proc/tunesmith-run")
        expected = "cannot be created"
    fails(
        capsys,
        ["train", f"model={tiny_model}", f"data.train={train}", f"output_dir={target}"],
        f"output_dir={target}",
        expected,
    )


def test_labels_of_mixed_kinds_name_values_and_rows(capsys, tiny_model, out, tmp_path):
    rows = sentiment_rows(12)
    labels = ["0", "1"] * 5 + ["yes", "0.5"]
    mixed = [{"text": r["text"], "label": v} for r, v in zip(rows, labels, strict=True)]
    data = write_csv(tmp_path / "t.csv", mixed)
    err = fails(
        capsys,
        ["train", f"model={tiny_model}", f"data.train={data}", f"output_dir={out}"],
        "mixes",
        "'yes' (rows 11)",
        "'0.5'",
    )
    assert "rows 1, 2, 3" in err
    assert_no_finished_run(out)


@pytest.fixture(scope="module")
def pair_run(tiny_model, tmp_path_factory) -> Path:
    """A tiny model trained two steps on sentence pairs."""
    from conftest import pair_rows

    root = tmp_path_factory.mktemp("pairs")
    train = write_csv(root / "train.csv", pair_rows(40, seed=3))
    with own_caches(root):
        args = [f"model={tiny_model}", f"data.train={train}", "train.max_steps=2"]
        assert main(["train", *args, f"output_dir={root / 'run'}"]) == 0
    return root / "run"


def test_a_pair_model_refuses_single_texts(capsys, pair_run, tmp_path, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\nfirst\tsecond\n"))
    fails(capsys, ["predict", str(pair_run)], "line(s) 1 have no tab", "sentence pairs")
    only_first = write_csv(tmp_path / "one.csv", [{"sentence1": "good film"}])
    fails(
        capsys,
        ["predict", str(pair_run), "--data", str(only_first)],
        "sentence pairs (sentence1 + sentence2)",
        "columns: sentence1",
    )


def test_predict_keeps_one_record_per_input_line(capsys, pair_run, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("a good\tfilm\n\nbad\tawful\n  \n"))
    assert main(["predict", str(pair_run)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3, 4]
    assert [r["text"] for r in records] == ["a good", "", "bad", "  "]
    assert records[2]["text_pair"] == "awful" and records[2]["label"] in ("0", "1")
    assert records[1]["label"] is None and "empty" in records[1]["error"]


def test_predict_file_records_carry_their_row(capsys, pair_run, tmp_path):
    from conftest import pair_rows

    data = write_csv(tmp_path / "p.csv", pair_rows(3, seed=9))
    out = tmp_path / "p.csv.out.csv"
    assert main(["predict", str(pair_run), "--data", str(data), "--out", str(out)]) == 0
    header, *rows = out.read_text().splitlines()
    assert header == "row,label,score_0,score_1"
    assert [r.split(",")[0] for r in rows] == ["1", "2", "3"]


def test_unknown_prediction_format_is_refused_before_anything_is_written(
    capsys, pair_run, tmp_path
):
    out = tmp_path / "preds.xlsx"
    fails(capsys, ["predict", str(pair_run), "--out", str(out)], "preds.xlsx", ".jsonl or .csv")
    assert not out.exists()


def test_predict_on_a_missing_folder(capsys, tmp_path):
    fails(capsys, ["predict", str(tmp_path / "gone")], "gone: no such folder")


def test_latin1_file_names_the_line(capsys, tiny_model, out, tmp_path):
    data = tmp_path / "latin.csv"
    data.write_bytes("text,label\ngood film,a\ncaf\xe9 film,b\n".encode("latin-1"))
    fails(
        capsys,
        ["train", f"model={tiny_model}", f"data.train={data}", f"output_dir={out}"],
        "latin.csv: line 3 is not valid utf-8",
        "byte 4 of the line",
        "data.encoding",
    )


def test_binary_file_is_not_told_to_change_encoding(capsys, tiny_model, out, tmp_path):
    data = tmp_path / "sheet.csv"
    data.write_bytes(b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00" * 20)  # a zip (xlsx)
    err = fails(
        capsys,
        ["train", f"model={tiny_model}", f"data.train={data}", f"output_dir={out}"],
        "sheet.csv: not a text file",
    )
    assert "encoding" not in err


def test_a_key_without_its_value(capsys, sentiment_csv):
    train, _ = sentiment_csv
    fails(capsys, ["train", "data.train", str(train)], "data.train is a config key", "data.train=")


def test_broken_yaml_names_the_line(capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  train: t.csv\n  validation: [a, b\ntrain: {epochs: 1}\n")
    fails(capsys, ["train", str(config)], "c.yaml is not valid YAML", "line 4")


def test_train_prints_its_result_alone_on_stdout(capsys, tiny_model, sentiment_csv, out):
    train, validation = sentiment_csv
    args = [f"model={tiny_model}", f"data.train={train}", f"data.validation={validation}"]
    assert main(["train", *args, "train.max_steps=2", f"output_dir={out}"]) == 0
    captured = capsys.readouterr()
    (line,) = captured.out.splitlines()  # `tunesmith train ... | jq` reads one JSON document
    assert json.loads(line)["output_dir"] == str(out)
    assert "tunesmith: classification" in captured.err and "validation" in captured.err


LIGHT = """
import sys
from tunesmith.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:  # --help
    code = e.code
assert "torch" not in sys.modules, "torch was imported"
sys.exit(code)
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["train", "data.train=missing.csv"],
        ["predict", "no-such-run"],
        ["evaluate", "no-such-run", "--data", "x.csv"],
        ["train", "data.train=t.csv", "train.epoch=3"],
    ],
    ids=["help", "missing-data", "missing-model", "evaluate-missing-model", "config-typo"],
)
def test_mistakes_are_answered_before_torch_is_imported(args, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", LIGHT, *args], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode in (0, 2), done.stderr
    assert "torch was imported" not in done.stderr
