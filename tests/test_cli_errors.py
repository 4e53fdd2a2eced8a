"""Bad input through the real CLI: one stderr line naming the culprit, exit 2, no finished run."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import sentiment_rows, write_csv

from tunesmith.cli import main


def fails(capsys, args: list[str], *expected: str) -> str:
    capsys.readouterr()  # drop what the test's own setup printed
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tunesmith: error: ") and "\n" not in err, err
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
    fails(capsys, args, "already holds a run", "overwrite=true")
    assert main([*args, "overwrite=true"]) == 0


def test_predict_on_a_folder_that_is_not_a_model(capsys, tmp_path):
    fails(capsys, ["predict", str(tmp_path), "--data", str(tmp_path / "x.csv")], "not a model")
