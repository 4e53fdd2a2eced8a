"""The page's other sections: the summary, configuration, data (label distributions and
co-occurrence, token lengths), training curves, throughput and hardware; and a language model's
whole page body, which has no labels to score."""

from __future__ import annotations

import html
import json
import time
from typing import Any

import numpy as np
import yaml

from tunesmith.report.html import Figures, _nav, _note, _p, _section, _table
from tunesmith.report.results import _metrics_table, token_lengths
from tunesmith.report.run import FinishedRun, Splits
from tunesmith.runfolder.layout import METRICS

TOKEN_LENGTH_SAMPLE = 20_000  # training rows tokenized for the histogram: enough for its shape
TOP_PAIRS = 10  # multi-label: the most frequent label pairs listed under the co-occurrence map


def _summary(run: FinishedRun) -> str:
    m = run.metrics
    metric = m.get("metric_for_best", "")
    baselines = m.get("baseline") or {}
    baseline = baselines.get("majority_class") or {}
    before = baselines.get("before_training") or {}
    finished = time.localtime((run.path / METRICS).stat().st_mtime)

    def score(value: float | None) -> str | None:
        return None if value is None else f"{value:.4f}"

    rows = [
        ("run folder", str(run.path.resolve())),
        ("model", str(run.config.get("model", "?"))),
        ("task", m.get("data", {}).get("task", "?")),
        (f"validation {metric}", score(m.get("validation", {}).get(metric))),
        (f"test {metric}", score(m.get("test", {}).get(metric))),
        (f"majority-class baseline {metric}", score(baseline.get(metric))),
        (f"before training {metric}", score(before.get(metric))),
        (
            "best step / steps",
            f"{m.get('best_step')} / {m.get('train', {}).get('optimizer_steps')}",
        ),
        ("finished", time.strftime("%Y-%m-%d %H:%M", finished)),
    ]
    return f"<h1>tunesmith report: {html.escape(run.path.resolve().name)}</h1>\n" + _table(
        ["", ""], [r for r in rows if r[1] is not None], show_header=False
    )


def _config(config: dict) -> str:
    """One key/value table per config group (top-level keys, data, train, ...), side by side."""
    groups: dict[str, list[tuple[str, str]]] = {"run": []}
    for key, value in config.items():
        if isinstance(value, dict):
            groups[key] = [(k, _config_value(v)) for k, v in value.items()]
        else:
            groups["run"].append((key, _config_value(value)))
    tables = [
        f"<div><h3>{html.escape(name)}</h3>{_table(['key', 'value'], rows)}</div>"
        for name, rows in groups.items()
        if rows
    ]
    return f'<div class="grid">{"".join(tables)}</div>'


def _config_value(value: Any) -> str:
    if isinstance(value, list | dict):
        return json.dumps(value)
    return yaml.safe_dump(value).removesuffix("\n...\n").strip()  # null, true, 5e-3 as in YAML


def _data(
    run: FinishedRun, predictor: Any, splits: Splits | None, problem: str | None, figures: Figures
) -> str:
    from tunesmith.runfolder import plots

    info = run.metrics.get("data", {})
    rows_then = info.get("rows", {})
    columns = info.get("columns", {})
    used = ", ".join(f"{k}={v}" for k, v in columns.items() if v)
    padding = run.metrics.get("train", {}).get("padding_share")
    parts = [
        _p(f"Columns: {used}. Tokenization: {info.get('tokenization', '?')}."),
    ]
    if padding is not None:
        parts.append(
            _p(f"Padding share: {padding:.1%} of the tokens in training batches were padding.")
        )
    if splits is None:
        parts.append(_table(["split", "rows"], list(rows_then.items())))
        parts.append(_note(f"The data files could not be read now, so no distributions: {problem}"))
        return "\n".join(parts)
    ds = splits.datasets
    changed = [n for n in ds if n in rows_then and rows_then[n] != len(ds[n])]
    if changed:
        now = ", ".join(f"{n} {len(ds[n])} (then {rows_then[n]})" for n in changed)
        parts.append(
            _note(
                f"The data files changed since training (rows now: {now}); the figures below "
                f"describe the files as they are now."
            )
        )
    labels = {name: np.asarray(split["labels"]) for name, split in ds.items()}
    if predictor.labels.has_classes:
        names = list(predictor.labels.names)
        multi = predictor.task(splits.columns).multi
        counts = {
            n: v.sum(0).astype(int) if multi else np.bincount(v, minlength=len(names))
            for n, v in labels.items()
        }
        rows = {n: len(ds[n]) for n in ds}
        if multi:
            parts.append(_p("Rows carrying each label (a row may carry several):"))
        header = ["split", "rows", *names]
        parts.append(_table(header, [[n, rows[n], *(int(c) for c in counts[n])] for n in ds]))
        parts.append(
            figures.add(
                "label_distribution",
                lambda p: plots.plot_label_distribution(counts, rows, names, p),
                "label distribution per split",
            )
        )
        if multi:
            parts.append(_cooccurrence(labels["train"], names, figures))
    else:
        header = ["split", "rows", "mean", "std", "min", "max"]
        stats = [
            [n, len(ds[n]), float(v.mean()), float(v.std()), float(v.min()), float(v.max())]
            for n, v in labels.items()
        ]
        parts.append(_table(header, stats))
        parts.append(
            figures.add(
                "label_distribution",
                lambda p: plots.plot_value_histograms(labels, p),
                "label values per split",
            )
        )
    lengths = _token_lengths(ds["train"], splits.columns, predictor.tokenizer)
    sampled = (
        f" (a seeded sample of {len(ds['train']):,})" if len(lengths) < len(ds["train"]) else ""
    )
    cut = (lengths > predictor.max_length).mean()
    parts.append(
        _p(
            f"Token lengths of {len(lengths):,} training rows{sampled}: median "
            f"{np.median(lengths):.0f}, 95th percentile {np.percentile(lengths, 95):.0f}, longest "
            f"{lengths.max()}; {cut:.1%} are cut at max_length={predictor.max_length}."
        )
    )
    parts.append(
        figures.add(
            "token_lengths",
            lambda p: plots.plot_token_lengths(lengths, predictor.max_length, p),
            "token length histogram",
        )
    )
    return "\n".join(parts)


def _cooccurrence(train_labels: np.ndarray, names: list[str], figures: Figures) -> str:
    """Multi-label: how many labels training rows carry, which labels come together (a K x K
    map, most frequent labels first) and the most frequent pairs."""
    from tunesmith.runfolder import plots

    order = np.argsort(-train_labels.sum(0), kind="stable")
    rows = train_labels[:, order].astype(np.int64)
    names = [names[i] for i in order]
    matrix = rows.T @ rows  # [i, j]: rows with labels i and j; [i, i]: rows with label i
    per_row = np.bincount(rows.sum(1))
    spread = ", ".join(f"{k} label{'s' * (k != 1)}: {n:,}" for k, n in enumerate(per_row) if n)
    parts = [
        "<h3>Label co-occurrence in training</h3>",
        _p(f"Rows by how many labels they carry: {spread} (mean {rows.sum(1).mean():.2f})."),
        figures.add(
            "label_cooccurrence",
            lambda p: plots.plot_cooccurrence(matrix, names, p),
            "label co-occurrence heatmap",
        ),
    ]
    first, second = np.triu_indices(len(names), 1)
    together = matrix[first, second]
    top = [t for t in np.argsort(-together, kind="stable")[:TOP_PAIRS] if together[t]]
    if not top:
        return "\n".join([*parts, _note("No training row carries two labels together.")])
    pairs = [
        [
            names[first[t]],
            names[second[t]],
            int(together[t]),
            together[t] / matrix[first[t], first[t]],
            together[t] / matrix[second[t], second[t]],
        ]
        for t in top
    ]
    header = [
        "label",
        "with label",
        "rows with both",
        "of the first's rows",
        "of the second's rows",
    ]
    explain = _p(f"The {len(top)} most frequent pairs, and what share of each label's rows.")
    return "\n".join([*parts, explain, _table(header, pairs)])


def _token_lengths(train: Any, columns: Any, tokenizer: Any) -> np.ndarray:
    """Untruncated token counts of (a seeded sample of) the training rows."""
    if len(train) > TOKEN_LENGTH_SAMPLE:
        keep = np.random.default_rng(0).choice(len(train), TOKEN_LENGTH_SAMPLE, replace=False)
        train = train.select(np.sort(keep))
    return token_lengths(train, columns, tokenizer)


def _curves(run: FinishedRun, figures: Figures) -> str:
    from tunesmith.runfolder import plots

    records = [r for r in run.records if "step" in r]
    if not records:
        return _note("metrics.jsonl holds no logged steps.")
    parts = [
        figures.add(
            "training_curves",
            lambda p: plots.plot_loss_and_learning_rate(records, p),
            "training loss and learning rate",
        )
    ]
    if any("validation" in r for r in records):
        parts.append(
            figures.add(
                "validation_metrics",
                lambda p: plots.plot_validation_metrics(records, p),
                "validation metrics per step",
            )
        )
    else:
        parts.append(_note("No evaluation was logged during training."))
    return "\n".join(parts)


def _throughput(m: dict) -> str:
    t, hw = m.get("train", {}), m.get("hardware", {})
    speed = [
        ("samples per second", t.get("samples_per_second")),
        ("real tokens per second", t.get("real_tokens_per_second")),
        ("training seconds", t.get("seconds")),
        ("optimizer steps", t.get("optimizer_steps")),
        ("epochs", t.get("epochs")),
        ("samples", t.get("samples")),
        ("real tokens", t.get("real_tokens")),
        ("padding share", f"{t['padding_share']:.1%}" if "padding_share" in t else None),
        ("processes", t.get("processes")),
    ]
    machine = [
        ("precision", m.get("precision")),
        ("why", m.get("precision_reason")),
        ("CPU", hw.get("cpu")),
        ("CPU threads", str(hw["cpu_count"]) if "cpu_count" in hw else None),
        ("CPU flags", ", ".join(hw.get("cpu_flags", [])) or None),
        ("GPU", hw.get("gpu", "none")),
        ("torch", hw.get("torch")),
    ]
    return '<div class="grid">{}{}</div>'.format(
        _table(["training", ""], [r for r in speed if r[1] is not None], css="numbers"),
        _table(["hardware", ""], [r for r in machine if r[1] is not None]),
    )


def _language_model_body(run: FinishedRun, figures: Figures) -> list[str]:
    """A language model's page: no labels, so no distributions, confusion or worst rows."""
    data = run.metrics.get("data", {})
    splits = list(data.get("rows", {}))
    table = _table(
        ["split", "rows", "samples", "tokens"],
        [
            [n, data["rows"][n], data.get("samples", {}).get(n), data.get("tokens", {}).get(n)]
            for n in splits
        ],
    )
    return [
        _summary(run),
        _nav(),
        _section("config", _config(run.config)),
        _section("data", table),
        _section("curves", _curves(run, figures)),
        _section("validation", _metrics_table(run.metrics)),
        _section("worst", _note("A language model has no per-row predictions to rank.")),
        _section("throughput", _throughput(run.metrics)),
    ]
