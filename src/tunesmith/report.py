"""`tunesmith report`: one self-contained HTML page about a finished run; `tunesmith runs`.

The page inlines its CSS and figures (base64 PNG data URIs), so it survives being mailed or
attached as a single file; the figures are also written to a folder beside it. Validation
predictions are recomputed with the exported model on the data files named in config.yaml, put
through the same column, label, hold-out and sampling steps as training. With `--compare`,
another run's model predicts the same validation rows, and the page sets the two side by side,
class by class.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tunesmith import metrics
from tunesmith.errors import UserError
from tunesmith.runfolder import CONFIG, METRICS, METRICS_LOG, read_decisions, read_log

# torch, transformers, datasets, matplotlib and scikit-learn are imported inside the report's
# functions: `tunesmith runs` only reads JSON files and should answer at once, not in 10 s.

WORST_EXAMPLES = 10
TOKEN_LENGTH_SAMPLE = 20_000  # training rows tokenized for the histogram: enough for its shape
SHOWN_TEXT_CHARS = 400  # longer texts are cut in the examples table to keep it scannable
TOP_PAIRS = 10  # multi-label: the most frequent label pairs listed under the co-occurrence map
CLASS_TASKS = ("classification", "multi_label")  # label kinds with classes: per-class tables
# Data keys that shape training alone: runs that differ only in these validate on the same rows.
TRAINING_ONLY_DATA_KEYS = frozenset({"test", "max_length", "max_train_samples", "cache_dir"})
SECTIONS = {
    "config": "Configuration",
    "data": "Data",
    "curves": "Training curves",
    "validation": "Validation results",
    "worst": "Worst-predicted validation examples",
    "throughput": "Throughput and hardware",
}


# ---- tunesmith report ----


@dataclass
class Run:
    path: Path
    metrics: dict
    records: list[dict]  # metrics.jsonl
    config: dict  # config.yaml, as plain YAML: readable even if config keys changed since


def load_run(path: str | Path) -> Run:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise UserError(f"{path}: no such folder")
    if not (path / METRICS).is_file():
        raise UserError(f"{path}: not a finished run (no metrics.json)")
    metrics = json.loads((path / METRICS).read_text(encoding="utf-8"))
    config_path = path / CONFIG
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    return Run(path, metrics, read_log(path / METRICS_LOG), config or {})


@dataclass
class Splits:
    """The raw splits as training saw them, with a `labels` column, and their text columns."""

    datasets: dict[str, Any]  # split name -> datasets.Dataset
    columns: Any  # data.Columns


def load_splits(run: Run) -> Splits:
    """The run's labelled splits, made by the very function training used, with the method
    training recorded (deciding it again could pick another and so other validation rows)."""
    from tunesmith.config import Config, DataConfig, FewShotConfig, TrainConfig
    from tunesmith.few_shot import Method
    from tunesmith.preprocess import task_splits

    # Field by field, not through config validation: a run's config.yaml stays readable when
    # config keys change later.
    def known(cls: type, section: str) -> Any:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in run.config.get(section, {}).items() if k in names})

    t = run.config.get("train", {})
    train = TrainConfig(seed=t.get("seed", TrainConfig.seed), class_weights=t.get("class_weights"))
    cfg = Config(
        task=run.config.get("task", "auto"),
        label_names=run.config.get("label_names"),
        data=known(DataConfig, "data"),
        train=train,
        few_shot=known(FewShotConfig, "few_shot"),
    )
    # Runs from before decisions.json recorded their method in metrics.json alone.
    method = read_decisions(run.path).get("method") or run.metrics.get("data", {}).get("method")
    made = task_splits(cfg, Method(**method) if method else None)
    kept = {n: made.splits[n] for n in ("train", "validation", "test") if n in made.splits}
    return Splits(kept, made.task.columns)


class Figures:
    """Writes each figure as a PNG into a folder and returns it inlined as an <img> tag."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, plot: Callable[[Path], None], alt: str) -> str:
        path = self.folder / f"{name}.png"
        plot(path)
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def write_report(
    run_dir: str | Path, out: str | Path | None = None, compare: str | Path | None = None
) -> Path:
    """Write the report page (default RUN/report.html) and its PNGs (RUN/report/); returns the
    page's path. `compare`: another finished run of the same classes, validated on the same
    rows, whose model is set beside this one's, class by class."""
    from tunesmith.predict import Predictor

    run = load_run(run_dir)
    other = load_run(compare) if compare is not None else None
    if other is not None:
        check_comparable(run, other)
    out_path = Path(out).expanduser() if out else run.path / "report.html"
    if out_path.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out {out_path}: give an .html file (its figures go to a folder beside)")
    figures = Figures(out_path.with_suffix(""))
    if _kind(run) in ("masked-lm", "causal-lm"):
        return _write_page(run, out_path, _language_model_body(run, figures))
    try:
        splits, data_problem = load_splits(run), None
    except UserError as e:  # files moved or gone: report what metrics.json and the log hold
        if other is not None:
            raise UserError(f"{_cannot_compare(run, other)}: the first's data: {e}") from None
        splits, data_problem = None, str(e)
    if splits is not None and "validation" not in splits.datasets:
        if other is not None:
            raise UserError(
                f"{_cannot_compare(run, other)}: the first held no validation rows out "
                f"(few-shot); train both with the same data.validation"
            )
        splits, data_problem = None, "the run held none out (few-shot without data.validation)"
    if other is not None:
        _check_same_validation(run, splits, other)
    predictor = Predictor(run.path)
    body = [
        _summary(run),
        _nav(),
        _section("config", _config(run.config)),
        _section("data", _data(run, predictor, splits, data_problem, figures)),
        _section("curves", _curves(run, figures)),
    ]
    if splits is None:
        validation, worst = _without_predictions(run, data_problem)
    elif predictor.labels.kind == "regression":
        validation, worst = _regression_results(run, predictor, splits, figures)
    else:
        scored = score(predictor, splits)
        validation, worst = _class_results(run, scored, splits, figures)
        if other is not None:
            validation += "\n" + _comparison(run, scored, other, splits)
    body += [
        _section("validation", validation),
        _section("worst", worst),
        _section("throughput", _throughput(run.metrics)),
    ]
    return _write_page(run, out_path, body)


def _kind(run: Run) -> str | None:
    return run.metrics.get("data", {}).get("task")


def _cannot_compare(run: Run, other: Run) -> str:
    return f"cannot compare {run.path} with {other.path}"


def check_comparable(run: Run, other: Run) -> None:
    """Refuse --compare, in one line naming both folders, unless both runs put texts into the
    same classes; that they validate on the same rows is checked once the data is read."""
    kinds = (_kind(run), _kind(other))
    for r, kind in zip((run, other), kinds, strict=True):
        if kind not in CLASS_TASKS:
            raise UserError(
                f"{_cannot_compare(run, other)}: {r.path} is a {kind} run; --compare sets the "
                f"classes of two classification or two multi-label runs side by side"
            )
    if kinds[0] != kinds[1]:
        raise UserError(
            f"{_cannot_compare(run, other)}: the first is a {kinds[0]} run, the second a "
            f"{kinds[1]} run"
        )
    mine, theirs = (set(r.metrics.get("data", {}).get("labels", [])) for r in (run, other))
    if mine != theirs:

        def shown(names: set) -> str:
            return ", ".join(map(repr, sorted(names))) or "none"

        raise UserError(
            f"{_cannot_compare(run, other)}: their labels differ (only in the first: "
            f"{shown(mine - theirs)}; only in the second: {shown(theirs - mine)}); compare runs "
            f"trained on the same classes"
        )


def _check_same_validation(run: Run, splits: Splits, other: Run) -> None:
    """Refuse --compare unless the other run's config yields the very validation rows (texts and
    labels) this run's does; the settings that differ are named as the likely cause."""
    try:
        theirs = load_splits(other)
    except UserError as e:
        raise UserError(f"{_cannot_compare(run, other)}: the second's data: {e}") from None
    difference = _row_difference(run, splits, other, theirs)
    if difference:
        why = "; ".join([difference, *_setting_differences(run, other)])
        raise UserError(
            f"{_cannot_compare(run, other)}: they validate on different rows ({why}); compare "
            f"runs validated on the same data"
        )


def _row_difference(run: Run, mine: Splits, other: Run, theirs: Splits) -> str | None:
    a, b = mine.datasets["validation"], theirs.datasets["validation"]
    if len(a) != len(b):
        return f"{len(a):,} vs {len(b):,} validation rows"
    if len(mine.columns.texts) != len(theirs.columns.texts):
        return "single texts vs sentence pairs"
    for col_a, col_b in zip(mine.columns.texts, theirs.columns.texts, strict=True):
        changed = _first_difference(a[col_a], b[col_b])
        if changed is not None:
            return f"validation row {changed + 1} has another text"
    # As names: two runs may number the same classes differently.
    changed = _first_difference(_label_names(a["labels"], run), _label_names(b["labels"], other))
    return None if changed is None else f"validation row {changed + 1} has another label"


def _first_difference(xs: list, ys: list) -> int | None:
    """The first index where two lists of equal length differ."""
    return next((i for i, (x, y) in enumerate(zip(xs, ys, strict=True)) if x != y), None)


def _label_names(labels: list, run: Run) -> list:
    """Class ids as names, 0/1 rows as sets of names."""
    names = run.metrics.get("data", {}).get("labels", [])
    return [
        names[v] if isinstance(v, int) else {n for n, x in zip(names, v, strict=True) if x}
        for v in labels
    ]


def _setting_differences(run: Run, other: Run) -> list[str]:
    """'key: this vs that' for the settings that decide which rows a run validates on."""

    def settings(r: Run) -> dict:
        data = r.config.get("data", {})
        found = {f"data.{k}": v for k, v in data.items() if k not in TRAINING_ONLY_DATA_KEYS}
        for key in ("data.train", "data.validation"):  # as the report reads them: from here
            if isinstance(found.get(key), str):
                found[key] = str(Path(found[key]).expanduser().resolve())
        return {**found, "train.seed": r.config.get("train", {}).get("seed")}

    a, b = settings(run), settings(other)
    return [f"{k}: {a.get(k)} vs {b.get(k)}" for k in sorted(a | b) if a.get(k) != b.get(k)]


def _write_page(run: Run, out_path: Path, body: list[str]) -> Path:
    page = PAGE.format(title=html.escape(f"tunesmith report: {run.path}"), body="\n".join(body))
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out_path)
    return out_path


def _language_model_body(run: Run, figures: Figures) -> list[str]:
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


# ---- sections ----


def _summary(run: Run) -> str:
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


def _nav() -> str:
    links = " · ".join(f'<a href="#{key}">{title}</a>' for key, title in SECTIONS.items())
    return f"<nav>{links}</nav>"


def _section(key: str, content: str) -> str:
    return f'<section id="{key}">\n<h2>{SECTIONS[key]}</h2>\n{content}\n</section>'


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
    run: Run, predictor: Any, splits: Splits | None, problem: str | None, figures: Figures
) -> str:
    from tunesmith import tracking

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
    if predictor.labels.kind in CLASS_TASKS:
        names = list(predictor.labels.names)
        multi = predictor.labels.kind == "multi_label"
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
                lambda p: tracking.plot_label_distribution(counts, rows, names, p),
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
                lambda p: tracking.plot_value_histograms(labels, p),
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
            lambda p: tracking.plot_token_lengths(lengths, predictor.max_length, p),
            "token length histogram",
        )
    )
    return "\n".join(parts)


def _cooccurrence(train_labels: np.ndarray, names: list[str], figures: Figures) -> str:
    """Multi-label: how many labels training rows carry, which labels come together (a K x K
    map, most frequent labels first) and the most frequent pairs."""
    from tunesmith import tracking

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
            lambda p: tracking.plot_cooccurrence(matrix, names, p),
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
    """Untruncated token counts (special tokens included), so the cut at max_length shows."""
    if len(train) > TOKEN_LENGTH_SAMPLE:
        keep = np.random.default_rng(0).choice(len(train), TOKEN_LENGTH_SAMPLE, replace=False)
        train = train.select(np.sort(keep))
    texts = [str(t) for t in train[columns.text]]
    pairs = [str(t) for t in train[columns.text_pair]] if columns.text_pair else None
    encoded = tokenizer(texts, pairs, truncation=False, verbose=False)
    return np.asarray([len(ids) for ids in encoded["input_ids"]])


def _curves(run: Run, figures: Figures) -> str:
    from tunesmith import tracking

    records = [r for r in run.records if "step" in r]
    if not records:
        return _note("metrics.jsonl holds no logged steps.")
    parts = [
        figures.add(
            "training_curves",
            lambda p: tracking.plot_loss_and_learning_rate(records, p),
            "training loss and learning rate",
        )
    ]
    if any("validation" in r for r in records):
        parts.append(
            figures.add(
                "validation_metrics",
                lambda p: tracking.plot_validation_metrics(records, p),
                "validation metrics per step",
            )
        )
    else:
        parts.append(_note("No evaluation was logged during training."))
    return "\n".join(parts)


def _metrics_table(m: dict) -> str:
    """Validation (and test) scores beside a baseline; multi-label adds validation's scores at a
    fixed 0.5, which shows what tuning the thresholds gained."""
    validation, test = m.get("validation", {}), m.get("test")
    baselines = m.get("baseline") or {}
    baseline = baselines.get("majority_class") or baselines.get("before_training")
    name = "majority baseline" if "majority_class" in baselines else "before training"
    fixed = (m.get("validation_details") or {}).get("at_threshold_0.5")
    header = [
        "metric",
        "validation",
        *(["test"] if test else []),
        *([name] if baseline else []),
        *(["validation at threshold 0.5"] if fixed else []),
    ]
    rows = [
        [
            name,
            value,
            *([test.get(name)] if test else []),
            *([baseline.get(name)] if baseline else []),
            *([fixed.get(name)] if fixed else []),
        ]
        for name, value in validation.items()
    ]
    return _table(header, rows)


@dataclass
class Scored:
    """A classifier's predictions on the validation rows, its classes in a given order."""

    names: list[str]
    labels: np.ndarray  # class ids; multi-label: 0/1, rows x labels
    probabilities: np.ndarray  # rows x classes: softmax; multi-label: each label's sigmoid
    predictions: np.ndarray  # class ids; multi-label: 0/1 at each label's threshold
    thresholds: np.ndarray | None  # multi-label: the tuned ones saved in model/tunesmith.json

    @property
    def multi(self) -> bool:
        return self.thresholds is not None

    def scores(self) -> dict[str, float]:
        if self.multi:
            return metrics.multi_label_metrics(self.labels, self.predictions)
        return metrics.classification_metrics(self.labels, self.predictions, len(self.names))

    def per_class(self) -> dict[str, dict]:
        """Precision, recall, F1, support (and the threshold) per class, as metrics.json holds a
        multi-label run's validation_details."""
        report = metrics.per_label(self.labels, self.predictions, self.names)
        if self.multi:
            for name, threshold in zip(self.names, self.thresholds, strict=True):
                report[name]["threshold"] = float(threshold)
        return report


def score(predictor: Any, splits: Splits, names: list[str] | None = None) -> Scored:
    """`predictor`'s model on the validation rows, with the classes in `names`' order (its own
    by default; the rows' label ids must follow the same order)."""
    own = list(predictor.labels.names)
    names = names or own
    order = [own.index(n) for n in names]
    validation = splits.datasets["validation"]
    logits = predictor.logits(validation, splits.columns)[:, order].astype(np.float64)
    labels = np.asarray(validation["labels"])
    task = predictor.task(splits.columns)
    probabilities = task.probabilities(logits)
    if task.multi:
        thresholds = np.asarray(predictor.thresholds)[order]
        predictions = (probabilities >= thresholds).astype(int)
        return Scored(names, labels.astype(int), probabilities, predictions, thresholds)
    return Scored(names, labels, probabilities, probabilities.argmax(-1), None)


def _class_results(run: Run, scored: Scored, splits: Splits, figures: Figures) -> tuple[str, str]:
    """The 'Validation results' and 'Worst-predicted validation examples' sections of a
    classifier, single- or multi-label."""
    from tunesmith import tracking

    parts = [_metrics_table(run.metrics), *_recomputed_note(run, scored.scores())]
    names, labels, predictions = scored.names, scored.labels, scored.predictions
    if scored.multi:
        parts.append(_per_class_table(scored.per_class(), "Per label, at its tuned threshold"))
    else:
        parts.append(
            figures.add(
                "confusion_matrix",
                lambda p: tracking.plot_confusion_matrix(labels, predictions, names, p),
                "validation confusion matrix",
            )
        )
        parts.append(_per_class_table(scored.per_class(), "Per class"))
    return "\n".join(parts), _worst(scored, splits)


def _worst(scored: Scored, splits: Splits) -> str:
    """The rows the model got most wrong: the lowest probability on the true class, or for
    multi-label the label furthest from the truth, a true one or an absent one."""
    validation, columns = splits.datasets["validation"], splits.columns
    texts = [[str(t) for t in validation[c]] for c in columns.texts]
    header = ["text", "text pair"][: len(columns.texts)]
    names, labels, probs = scored.names, scored.labels, scored.probabilities
    predictions = scored.predictions
    if scored.multi:
        right = np.where(labels == 1, probs, 1 - probs)  # each label's probability of the truth
        worst_label = right.argmin(1)
        order = np.argsort(right.min(1), kind="stable")[:WORST_EXAMPLES]

        def shown(row: np.ndarray) -> str | None:
            return ", ".join(n for n, x in zip(names, row, strict=True) if x) or None

        def verdict(i: int, j: int) -> str:
            true, chosen = labels[i, j], predictions[i, j]
            wrong = (", missed" if true else ", predicted") if true != chosen else ""
            return f"{names[j]} ({'true' if true else 'not true'}{wrong})"

        header += ["true labels", "predicted", "worst label", "p(worst label)", "its threshold"]
        rows = [
            [
                *(_shorten(t[i]) for t in texts),
                shown(labels[i]),
                shown(predictions[i]),
                verdict(i, j),
                float(probs[i, j]),
                float(scored.thresholds[j]),
            ]
            for i, j in ((i, worst_label[i]) for i in order)
        ]
        explain = (
            f"The {len(order)} validation rows whose worst label is furthest from the truth: a "
            f"true label given the lowest probability, or an absent one the highest."
        )
    else:
        true_prob = probs[np.arange(len(labels)), labels]
        order = np.argsort(true_prob, kind="stable")[:WORST_EXAMPLES]
        header += ["true label", "predicted", "p(true)", "p(predicted)"]
        rows = [
            [
                *(_shorten(t[i]) for t in texts),
                names[labels[i]],
                names[predictions[i]],
                float(true_prob[i]),
                float(probs[i, predictions[i]]),
            ]
            for i in order
        ]
        explain = (
            f"The {len(order)} validation rows with the lowest probability on their true class."
        )
    return _p(explain) + "\n" + _table(header, rows, css="examples")


def _regression_results(
    run: Run, predictor: Any, splits: Splits, figures: Figures
) -> tuple[str, str]:
    from tunesmith import tracking

    validation, columns = splits.datasets["validation"], splits.columns
    labels = np.asarray(validation["labels"]).astype(np.float64)
    predictions = predictor.logits(validation, columns).reshape(-1)
    recomputed = metrics.regression_metrics(labels, predictions)
    parts = [
        _metrics_table(run.metrics),
        *_recomputed_note(run, recomputed),
        figures.add(
            "predictions",
            lambda p: tracking.plot_regression_scatter(labels, predictions, p),
            "predicted against true values",
        ),
        _p("A regression run: no confusion matrix or per-class table."),
    ]
    texts = [[str(t) for t in validation[c]] for c in columns.texts]
    errors = np.abs(predictions - labels)
    order = np.argsort(-errors, kind="stable")[:WORST_EXAMPLES]
    header = [*["text", "text pair"][: len(columns.texts)], "true value", "predicted"]
    rows = [
        [
            *(_shorten(t[i]) for t in texts),
            float(labels[i]),
            float(predictions[i]),
            float(errors[i]),
        ]
        for i in order
    ]
    explain = _p(f"The {len(order)} validation rows with the largest absolute error.")
    worst = explain + "\n" + _table([*header, "absolute error"], rows, css="examples")
    return "\n".join(parts), worst


def _without_predictions(run: Run, problem: str | None) -> tuple[str, str]:
    """The data could not be read: metrics.json's scores (and per-label figures) alone."""
    note = _note(f"Predictions need the validation rows: {problem}")
    parts = [_metrics_table(run.metrics)]
    per_label = run.metrics.get("validation_details", {}).get("per_label")
    if per_label:
        title = "Per label, at its tuned threshold (from metrics.json)"
        parts.append(_per_class_table(per_label, title))
    return "\n".join([*parts, note]), note


def _recomputed_note(run: Run, recomputed: dict[str, float]) -> list[str]:
    """A note when the best model's metric, recomputed now, is not what training measured."""
    metric = run.metrics.get("metric_for_best", "")
    then = run.metrics.get("validation", {}).get(metric)
    if then is None or abs(recomputed.get(metric, then) - then) <= 1e-3:
        return []
    return [
        _note(
            f"Recomputed now, validation {metric} is {recomputed[metric]:.4f}, not {then:.4f} as "
            f"at training time: the data files or the model changed since."
        )
    ]


def _per_class_table(per_class: dict[str, dict], title: str) -> str:
    """metrics.per_label's figures, with each label's threshold where there is one."""
    thresholds = all("threshold" in r for r in per_class.values())
    header = ["label", "threshold"] if thresholds else ["class"]
    rows = [
        [
            name,
            *([r["threshold"]] if thresholds else []),
            r["precision"],
            r["recall"],
            r["f1"],
            r["support"],
        ]
        for name, r in per_class.items()
    ]
    table = _table([*header, "precision", "recall", "F1", "support"], rows)
    return f"<h3>{html.escape(title)}</h3>\n{table}"


def _comparison(run: Run, scored: Scored, other: Run, splits: Splits) -> str:
    """The other run's model on the same validation rows, beside this run's, class by class."""
    from tunesmith import tracking
    from tunesmith.predict import Predictor

    theirs = score(Predictor(other.path), splits, scored.names)
    mine_scores, their_scores = scored.scores(), theirs.scores()
    overall = [[k, v, their_scores[k], v - their_scores[k]] for k, v in mine_scores.items()]
    mine, their = scored.per_class(), theirs.per_class()
    kinds = ("recall", "precision", "f1")
    rows = [
        [
            name,
            mine[name]["support"],
            *(
                x
                for f in kinds
                for x in (mine[name][f], their[name][f], mine[name][f] - their[name][f])
            ),
        ]
        for name in scored.names
    ]
    header = ["label" if scored.multi else "class", "support"]
    for f in ("recall", "precision", "F1"):
        header += [f, f"{f} (other)", f"Δ {f}"]
    mine_config, their_config = tracking.flat_config(run.config), tracking.flat_config(other.config)
    settings = [
        [key, _config_value(mine_config.get(key)), _config_value(their_config.get(key))]
        for key in sorted(mine_config | their_config)
        if key != "output_dir" and mine_config.get(key) != their_config.get(key)
    ]
    thresholds = "; multi-label runs decide at their own tuned thresholds" * scored.multi
    explain = _p(
        f"This run: {run.path.resolve()}. Other run: {other.path.resolve()}. Both models "
        f"predicted the same {len(scored.labels):,} validation rows now{thresholds}; Δ is this "
        f"run minus the other."
    )
    return "\n".join(
        [
            f"<h3>Against {html.escape(other.path.resolve().name)}</h3>",
            explain,
            _table(["setting", "this run", "other run"], settings)
            if settings
            else _p("The two runs' configs are the same."),
            _table(["metric", "this run", "other run", "Δ"], overall),
            _table(header, rows),
        ]
    )


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


# ---- HTML pieces; every piece of run or user text goes through html.escape here ----


def _p(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _shorten(text: str) -> str:
    return text if len(text) <= SHOWN_TEXT_CHARS else text[:SHOWN_TEXT_CHARS] + " …"


def _cell(value: Any) -> str:
    if value is None:
        return "<td>—</td>"
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return f"<td>{html.escape(str(value))}</td>"
    if isinstance(value, int | np.integer):
        return f'<td class="num">{value:,}</td>'
    return (
        f'<td class="num">{value:.4f}</td>'
        if abs(value) < 10
        else f'<td class="num">{value:,.1f}</td>'
    )


def _table(columns: list[str], rows: list, show_header: bool = True, css: str = "") -> str:
    """Rows of values: text escaped and left-aligned, numbers right-aligned, None as a dash.
    css: "examples" (full width, long texts wrap) or "numbers" (values right-aligned)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns) if show_header else ""
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>\n" for row in rows)
    table = f'<table class="{css}">' if css else "<table>"
    return table + (f"<thead><tr>{head}</tr></thead>" if head else "") + body + "</table>"


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
  color: #222; line-height: 1.45; }}
h1 {{ font-size: 1.6em; }}
h2 {{ border-bottom: 2px solid #ddd; padding-bottom: .2em; margin-top: 2em; }}
h3 {{ font-size: 1em; margin: .8em 0 .3em; }}
nav a {{ color: #2a5db0; }}
table {{ border-collapse: collapse; margin: .5em 0 1em; font-size: .92em; }}
th, td {{ border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
tr:nth-child(even) td {{ background: #fafafa; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
table.examples {{ width: 100%; }}
table.examples td {{ overflow-wrap: anywhere; }}
table.numbers td + td {{ text-align: right; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 0 2em; align-items: flex-start; }}
img {{ max-width: 100%; display: block; margin: .5em 0 1em; }}
.note {{ background: #fff6d6; border-left: 4px solid #e0b800; padding: .4em .8em; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""
