"""`tunesmith report --compare`: refuse, in one line naming why, two runs that do not put texts
into the same classes or do not validate on the same rows; otherwise the other run's model on
the same rows, beside this run's, class by class."""

from __future__ import annotations

import html
from pathlib import Path

from tunesmith.errors import UserError
from tunesmith.report.html import _p, _table
from tunesmith.report.results import Scored, score
from tunesmith.report.run import FinishedRun, Splits, _kind, load_splits
from tunesmith.report.sections import _config_value

# Data keys that shape training alone: runs that differ only in these validate on the same rows.
TRAINING_ONLY_DATA_KEYS = frozenset({"test", "max_length", "max_train_samples", "cache_dir"})


def _cannot_compare(run: FinishedRun, other: FinishedRun) -> str:
    return f"cannot compare {run.path} with {other.path}"


def check_comparable(run: FinishedRun, other: FinishedRun) -> None:
    """Refuse --compare, in one line naming both folders, unless both runs put texts into the
    same classes; that they validate on the same rows is checked once the data is read."""
    from tunesmith.tasks import has_classes  # torch: `tunesmith runs` imports this package

    kinds = (_kind(run), _kind(other))
    for r, kind in zip((run, other), kinds, strict=True):
        if not has_classes(kind):
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


def _check_same_validation(run: FinishedRun, splits: Splits, other: FinishedRun) -> None:
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


def _row_difference(
    run: FinishedRun, mine: Splits, other: FinishedRun, theirs: Splits
) -> str | None:
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


def _label_names(labels: list, run: FinishedRun) -> list:
    """Class ids as names, 0/1 rows as sets of names."""
    names = run.metrics.get("data", {}).get("labels", [])
    return [
        names[v] if isinstance(v, int) else {n for n, x in zip(names, v, strict=True) if x}
        for v in labels
    ]


def _setting_differences(run: FinishedRun, other: FinishedRun) -> list[str]:
    """'key: this vs that' for the settings that decide which rows a run validates on."""

    def settings(r: FinishedRun) -> dict:
        data = r.config.get("data", {})
        found = {f"data.{k}": v for k, v in data.items() if k not in TRAINING_ONLY_DATA_KEYS}
        for key in ("data.train", "data.validation"):  # as the report reads them: from here
            if isinstance(found.get(key), str):
                found[key] = str(Path(found[key]).expanduser().resolve())
        return {**found, "train.seed": r.config.get("train", {}).get("seed")}

    a, b = settings(run), settings(other)
    return [f"{k}: {a.get(k)} vs {b.get(k)}" for k in sorted(a | b) if a.get(k) != b.get(k)]


def _comparison(run: FinishedRun, scored: Scored, other: FinishedRun, splits: Splits) -> str:
    """The other run's model on the same validation rows, beside this run's, class by class."""
    from tunesmith.infer import Predictor
    from tunesmith.runfolder.log import flat_config

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
    mine_config, their_config = flat_config(run.config), flat_config(other.config)
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
