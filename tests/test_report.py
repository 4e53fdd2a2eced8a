"""`tunesmith report` and `tunesmith runs` on real tiny runs."""

from __future__ import annotations

import html
import json
import os
import random
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import own_caches, sentiment_rows, tagged_rows, write_csv, write_jsonl
from sklearn.metrics import recall_score

from tunesmith.cli import main
from tunesmith.errors import UserError
from tunesmith.infer import Predictor
from tunesmith.report import SECTIONS, write_report

HEADINGS = list(SECTIONS.values())


@pytest.fixture(scope="module")
def isolated_caches(tmp_path_factory):
    """conftest's cache isolation, for module-scoped fixtures (built before its autouse one)."""
    with own_caches(tmp_path_factory.getbasetemp()):
        yield


def train(model: Path, train_csv: Path, validation_csv: Path, out: Path, *extra: str) -> Path:
    args = [
        "train",
        f"model={model}",
        f"data.train={train_csv}",
        f"data.validation={validation_csv}",
        f"output_dir={out}",
        "train.micro_batch_size=16",
        "train.learning_rate=5e-3",
        "train.method=fine-tune",  # 120 rows per class would take the few-shot path
        *extra,
    ]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def classification_run(tiny_model, tmp_path_factory, isolated_caches) -> Path:
    folder = tmp_path_factory.mktemp("classification")
    return train(
        tiny_model,
        write_csv(folder / "train.csv", sentiment_rows(240, seed=1)),
        write_csv(folder / "validation.csv", sentiment_rows(60, seed=2)),
        folder / "run",
        "train.epochs=2",
        "train.eval_every_steps=5",
    )


@pytest.fixture(scope="module")
def classification_report(classification_run) -> str:
    assert main(["report", str(classification_run)]) == 0
    return (classification_run / "report.html").read_text(encoding="utf-8")


def section(page: str, key: str) -> str:
    return re.search(rf'<section id="{key}">(.*?)</section>', page, re.S).group(1)


def table_with(fragment: str, heading: str) -> str:
    """The first table with a column of this heading."""
    tables = re.findall(r"<table.*?</table>", fragment, re.S)
    return next(t for t in tables if f"<th>{html.escape(heading)}</th>" in t)


def header_of(table: str) -> list[str]:
    return re.findall(r"<th>(.*?)</th>", table)


def table_rows(fragment: str) -> list[list[str]]:
    """Cell texts (still HTML-escaped) of a table's body rows."""
    rows = re.findall(r"<tr>(.*?)</tr>", fragment)
    return [cells for row in rows if (cells := re.findall(r"<td[^>]*>(.*?)</td>", row))]


def assert_self_contained(page: str) -> None:
    assert not re.search(r"https?://", page)
    assert all(
        src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', page)
    )
    assert all(href.startswith("#") for href in re.findall(r'href="([^"]*)"', page))
    assert "<link" not in page and "<script" not in page


def test_report_is_one_self_contained_page(classification_run, classification_report):
    page = classification_report
    assert_self_contained(page)
    for heading in HEADINGS:
        assert f"<h2>{html.escape(heading)}</h2>" in page
    assert page.count('src="data:image/png;base64,') >= 4
    pngs = {p.name for p in (classification_run / "report").iterdir()}
    assert {"label_distribution.png", "token_lengths.png", "confusion_matrix.png"} <= pngs
    assert "<th>precision</th>" in section(page, "validation")  # the per-class table
    assert "Padding share" in section(page, "data")


def test_worst_examples_are_real_validation_texts(classification_run, classification_report):
    rows = table_rows(section(classification_report, "worst"))
    validation = {html.escape(row["text"]): row["label"] for row in sentiment_rows(60, seed=2)}
    assert len(rows) == 10
    assert all(validation[row[0]] == row[1] for row in rows)  # text and true label as in the file
    p_true = [float(row[3]) for row in rows]
    assert p_true == sorted(p_true)  # lowest probability on the true class first


def test_user_text_is_escaped_and_changed_data_noted(classification_run, tmp_path):
    run = shutil.copytree(classification_run, tmp_path / "run")
    rows = [{"text": "<script>alert(1)</script> bad movie", "label": "negative"}]
    rows += [{"text": f'a "good" film & <b>{i}</b>', "label": "positive"} for i in range(5)]
    validation = write_csv(tmp_path / "validation.csv", rows)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["validation"] = str(validation)
    (run / "config.yaml").write_text(yaml.safe_dump(config))

    page = write_report(run).read_text(encoding="utf-8")
    assert "<script" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; bad movie" in page
    assert "changed since training" in page


def test_missing_data_files_still_give_a_report(classification_run, tmp_path):
    run = shutil.copytree(classification_run, tmp_path / "run")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["validation"] = str(tmp_path / "moved.csv")
    (run / "config.yaml").write_text(yaml.safe_dump(config))

    page = write_report(run).read_text(encoding="utf-8")
    assert f"{tmp_path / 'moved.csv'}: no such file or folder" in section(page, "worst")
    accuracy = json.loads((run / "metrics.json").read_text())["validation"]["accuracy"]
    assert f">{accuracy:.4f}</td>" in section(page, "validation")  # from metrics.json
    assert "data:image/png;base64," in section(page, "curves")  # from metrics.jsonl


@pytest.fixture(scope="module")
def regression_run(tiny_model, tmp_path_factory, isolated_caches) -> Path:
    folder = tmp_path_factory.mktemp("regression")
    rng = random.Random(5)

    def scored(rows: list[dict]) -> list[dict]:
        # Fractional labels make the task a regression.
        base = {"positive": 0.8, "negative": 0.2}
        return [
            {"text": r["text"], "label": round(base[r["label"]] + rng.uniform(-0.1, 0.1), 3)}
            for r in rows
        ]

    return train(
        tiny_model,
        write_csv(folder / "train.csv", scored(sentiment_rows(48, seed=3))),
        write_csv(folder / "validation.csv", scored(sentiment_rows(16, seed=4))),
        folder / "run",
        "train.epochs=1",
        "train.eval_every_steps=1",
    )


def test_regression_run_skips_classification_parts(regression_run):
    out = regression_run / "elsewhere" / "page.html"
    out.parent.mkdir()
    assert main(["report", str(regression_run), "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert_self_contained(page)
    for heading in HEADINGS:
        assert f"<h2>{html.escape(heading)}</h2>" in page
    assert page.count('src="data:image/png;base64,') >= 4
    assert "confusion" not in {p.stem for p in (out.parent / "page").iterdir()}
    assert "<th>absolute error</th>" in section(page, "worst")
    assert "pearson" in section(page, "validation")


def stopped_run(folder: Path, classification_run: Path, last_step: int) -> Path:
    """A run interrupted after `last_step`: its log and a checkpoint, no metrics.json."""
    folder.mkdir(parents=True)
    shutil.copy(classification_run / "metrics.jsonl", folder / "metrics.jsonl")
    (folder / "checkpoints" / f"step-{last_step:08d}").mkdir(parents=True)
    return folder


def test_unfinished_run_is_a_one_line_user_error(classification_run, tmp_path, capsys):
    run = stopped_run(tmp_path / "stopped", classification_run, 40)
    with pytest.raises(UserError, match=r"stopped: not a finished run \(no metrics.json\)"):
        write_report(run)
    assert main(["report", str(run)]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_runs_lists_finished_and_unfinished_newest_first(classification_run, tmp_path, capsys):
    finished = shutil.copytree(classification_run, tmp_path / "runs" / "finished")
    stopped = stopped_run(tmp_path / "runs" / "stopped", classification_run, 40)
    (tmp_path / "runs" / "notes").mkdir()  # not a run: left out
    later = (finished / "metrics.json").stat().st_mtime + 60
    os.utime(stopped / "metrics.jsonl", (later, later))

    assert main(["runs", str(tmp_path / "runs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    metrics = json.loads((finished / "metrics.json").read_text())
    assert len(lines) == 2
    assert lines[0].startswith(str(stopped)) and "unfinished (last step 40)" in lines[0]
    assert lines[1].split()[:3] == [
        str(finished),
        "classification",
        f"accuracy={metrics['validation']['accuracy']:.4f}",
    ]
    assert f"{metrics['train']['optimizer_steps']} steps" in lines[1]

    assert main(["runs", str(finished)]) == 0  # a run folder itself
    assert capsys.readouterr().out.startswith(str(finished))


def test_runs_of_a_missing_folder_is_a_user_error(tmp_path, capsys):
    assert main(["runs", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err


# ---- multi-label runs ----


@pytest.fixture(scope="module")
def multi_label_run(tiny_model, tmp_path_factory, isolated_caches) -> Path:
    folder = tmp_path_factory.mktemp("multi-label")
    return train(
        tiny_model,
        write_jsonl(folder / "train.jsonl", tagged_rows(240, seed=1)),
        write_jsonl(folder / "validation.jsonl", tagged_rows(60, seed=2)),
        folder / "run",
        "train.epochs=3",
        "train.eval_every_steps=15",
        "train.freeze_word_embeddings=false",
    )


def test_multi_label_page_has_per_label_table_and_cooccurrence(multi_label_run):
    assert main(["report", str(multi_label_run)]) == 0
    page = (multi_label_run / "report.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    for heading in HEADINGS:
        assert f"<h2>{html.escape(heading)}</h2>" in page
    pngs = {p.name for p in (multi_label_run / "report").iterdir()}
    assert {"label_distribution.png", "label_cooccurrence.png", "token_lengths.png"} <= pngs

    # Per label: the thresholds saved in model/tunesmith.json, the figures metrics.json holds.
    per_label = table_with(section(page, "validation"), "threshold")
    assert header_of(per_label) == ["label", "threshold", "precision", "recall", "F1", "support"]
    thresholds = json.loads((multi_label_run / "model" / "tunesmith.json").read_text())
    stored = json.loads((multi_label_run / "metrics.json").read_text())["validation_details"]
    rows = {row[0]: row[1:] for row in table_rows(per_label)}
    assert set(rows) == {"mention", "neg", "pos"}
    for name, (threshold, precision, recall, f1, support) in rows.items():
        assert float(threshold) == pytest.approx(thresholds["thresholds"][name])
        figures = stored["per_label"][name]
        assert [precision, recall, f1] == [
            f"{figures[k]:.4f}" for k in ("precision", "recall", "f1")
        ]
        assert int(support) == figures["support"]
    assert "validation at threshold 0.5" in header_of(section(page, "validation"))

    # Co-occurrence: counted from the training rows themselves; pos and neg never meet.
    data = section(page, "data")
    assert "Label co-occurrence in training" in data
    assert 'alt="label co-occurrence heatmap"' in data
    train = tagged_rows(240, seed=1)
    both = {
        ("mention", tag): sum({"mention", tag} <= set(r["labels"]) for r in train)
        for tag in ("pos", "neg")
    }
    pairs = {
        (a, b): int(n.replace(",", ""))
        for a, b, n, *_ in table_rows(table_with(data, "rows with both"))
    }
    assert {frozenset(k) for k in pairs} == {frozenset(k) for k in both}
    for (a, b), n in pairs.items():
        assert n == both.get((a, b), both.get((b, a)))

    worst = section(page, "worst")
    assert header_of(worst)[1:3] == ["true labels", "predicted"]
    truth = {html.escape(r["text"]): set(r["labels"]) for r in tagged_rows(60, seed=2)}
    shown = table_rows(worst)
    assert len(shown) == 10
    assert all(set(row[1].split(", ")) == truth[row[0]] for row in shown)


def test_multi_label_page_without_its_data_shows_stored_figures(multi_label_run, tmp_path):
    run = shutil.copytree(multi_label_run, tmp_path / "run")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["validation"] = str(tmp_path / "moved.jsonl")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    page = write_report(run).read_text(encoding="utf-8")
    validation = section(page, "validation")
    assert "(from metrics.json)" in validation and "moved.jsonl: no such file" in validation
    assert {row[0] for row in table_rows(table_with(validation, "threshold"))} >= {"pos", "neg"}


# ---- --compare ----


@pytest.fixture(scope="module")
def balanced_run(tiny_model, classification_run, isolated_caches) -> Path:
    """The classification run's data and settings, with balanced class weights."""
    folder = classification_run.parent
    return train(
        tiny_model,
        folder / "train.csv",
        folder / "validation.csv",
        folder / "balanced",
        "train.epochs=3",
        "train.freeze_word_embeddings=false",  # learns, so its recall differs from the other's
        "train.class_weights=balanced",
    )


def validation_recall(run: Path) -> dict[str, float]:
    """Each class's recall on the classification runs' validation rows, measured apart from the
    report: the predictor on the texts, scored by scikit-learn."""
    rows = sentiment_rows(60, seed=2)
    predictor = Predictor(run, precision="fp32")
    predicted = [p["label"] for p in predictor.predict_texts([r["text"] for r in rows])]
    names = list(predictor.labels.names)
    recall = recall_score([r["label"] for r in rows], predicted, labels=names, average=None)
    return dict(zip(names, map(float, recall), strict=True))


def test_compare_sets_each_class_recall_beside_the_other_run(
    classification_run, balanced_run, tmp_path
):
    out = tmp_path / "compare.html"
    argv = ["report", str(classification_run), "--compare", str(balanced_run), "--out", str(out)]
    assert main(argv) == 0
    validation = section(out.read_text(encoding="utf-8"), "validation")
    assert f"<h3>Against {balanced_run.name}</h3>" in validation
    settings = table_rows(table_with(validation, "setting"))
    assert ["train.class_weights", "auto", "balanced"] in settings
    table = table_with(validation, "recall (other)")
    assert header_of(table)[:5] == ["class", "support", "recall", "recall (other)", "Δ recall"]
    mine, theirs = validation_recall(classification_run), validation_recall(balanced_run)
    rows = table_rows(table)
    assert [row[0] for row in rows] == ["negative", "positive"]
    assert mine != theirs  # two different models, so the test tells the columns apart
    for name, _support, recall, other, delta, *_ in rows:
        assert float(recall) == pytest.approx(mine[name], abs=6e-5)
        assert float(other) == pytest.approx(theirs[name], abs=6e-5)
        assert float(delta) == pytest.approx(mine[name] - theirs[name], abs=1e-4)


def test_compare_of_multi_label_runs_is_per_label(multi_label_run, tmp_path):
    copy = shutil.copytree(multi_label_run, tmp_path / "copy")
    out = tmp_path / "compare.html"
    argv = ["report", str(multi_label_run), "--compare", str(copy), "--out", str(out)]
    assert main(argv) == 0
    validation = section(out.read_text(encoding="utf-8"), "validation")
    assert "<h3>Against copy</h3>" in validation
    assert "The two runs&#x27; configs are the same." in validation
    rows = table_rows(table_with(validation, "recall (other)"))
    assert {row[0] for row in rows} == {"mention", "neg", "pos"}
    assert all(row[2] == row[3] and float(row[4]) == 0 for row in rows)  # the same model


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_compare_refuses_other_labels_with_both_folders_named(
    tiny_model, classification_run, multi_label_run, tmp_path, capsys
):
    rows = sentiment_rows(40, seed=6) + [{"text": "a film", "label": "neutral"}] * 4
    three = train(
        tiny_model,
        write_csv(tmp_path / "t.csv", rows),
        write_csv(tmp_path / "v.csv", rows),
        tmp_path / "three",
        "train.max_steps=1",
    )
    capsys.readouterr()
    assert main(["report", str(classification_run), "--compare", str(three)]) == 2
    err = one_line_error(capsys)
    assert f"cannot compare {classification_run} with {three}: their labels differ" in err
    assert "only in the second: 'neutral'" in err
    assert main(["report", str(classification_run), "--compare", str(multi_label_run)]) == 2
    err = one_line_error(capsys)
    assert "the first is a classification run, the second a multi_label run" in err


def test_compare_refuses_other_validation_rows(classification_run, balanced_run, tmp_path, capsys):
    other = shutil.copytree(balanced_run, tmp_path / "other")
    validation = write_csv(tmp_path / "validation.csv", sentiment_rows(60, seed=7))
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["data"]["validation"] = str(validation)
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "page.html"
    argv = ["report", str(classification_run), "--compare", str(other), "--out", str(out)]
    assert main(argv) == 2
    err = one_line_error(capsys)
    assert (
        f"cannot compare {classification_run} with {other}: they validate on different rows" in err
    )
    assert f"data.validation: {classification_run.parent / 'validation.csv'} vs {validation}" in err
    assert not out.exists()


def test_long_rows_get_scores_by_token_length(tiny_model, tmp_path):
    """Rows past max_length: the validation section splits its scores by token length."""
    rng = random.Random(0)

    def padded(rows: list[dict]) -> list[dict]:  # a third of the rows past 150 tokens
        filler = "the film was " * 50
        return [{**r, "text": r["text"] + " " + filler * (rng.random() < 1 / 3)} for r in rows]

    run = train(
        tiny_model,
        write_csv(tmp_path / "train.csv", padded(sentiment_rows(60, seed=1))),
        write_csv(tmp_path / "validation.csv", padded(sentiment_rows(30, seed=2))),
        tmp_path / "run",
        "train.max_steps=2",
        "data.max_length=48",
        "train.max_tokens_per_batch=768",
    )
    page = write_report(run).read_text(encoding="utf-8")

    table = table_with(section(page, "validation"), "cut at 48")
    cells = re.findall(r"<td[^>]*>(.*?)</td>", table)
    spans = cells[0::4]
    assert spans[0] in ("1-64", "65-128") and spans[-1] in ("129-256", "257-512")
    assert sum(int(c) for c in cells[1::4]) == 30  # every validation row in one bucket
    assert cells[3::4][0] in ("no", "some") and cells[3::4][-1] == "yes"


def test_short_rows_get_no_length_table(classification_report):
    assert "By token length" not in classification_report
