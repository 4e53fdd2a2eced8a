"""`tunesmith report`'s recipe: load the run (and the one to compare), remake its splits, and
write the page's sections top to bottom into one self-contained file."""

from __future__ import annotations

import html
from pathlib import Path

from tunesmith.errors import UserError
from tunesmith.report.compare import (
    _cannot_compare,
    _check_same_validation,
    _comparison,
    check_comparable,
)
from tunesmith.report.html import PAGE, Figures, _nav, _section
from tunesmith.report.results import (
    _class_results,
    _regression_results,
    _without_predictions,
    score,
)
from tunesmith.report.run import FinishedRun, _kind, load_run, load_splits
from tunesmith.report.sections import (
    _config,
    _curves,
    _data,
    _language_model_body,
    _summary,
    _throughput,
)


def write_report(
    run_dir: str | Path, out: str | Path | None = None, compare: str | Path | None = None
) -> Path:
    """Write the report page (default RUN/report.html) and its PNGs (RUN/report/); returns the
    page's path. `compare`: another finished run of the same classes, validated on the same
    rows, whose model is set beside this one's, class by class."""
    from tunesmith.infer import Predictor
    from tunesmith.tasks import is_language_model

    run = load_run(run_dir)
    other = load_run(compare) if compare is not None else None
    if other is not None:
        check_comparable(run, other)
    out_path = Path(out).expanduser() if out else run.path / "report.html"
    if out_path.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out {out_path}: give an .html file (its figures go to a folder beside)")
    figures = Figures(out_path.with_suffix(""))
    if is_language_model(_kind(run)):
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
    elif not predictor.labels.has_classes:
        validation, worst = _regression_results(run, predictor, splits, figures)
    else:
        scored = score(predictor, splits)
        validation, worst = _class_results(run, scored, splits, figures, predictor)
        if other is not None:
            validation += "\n" + _comparison(run, scored, other, splits)
    body += [
        _section("validation", validation),
        _section("worst", worst),
        _section("throughput", _throughput(run.metrics)),
    ]
    return _write_page(run, out_path, body)


def _write_page(run: FinishedRun, out_path: Path, body: list[str]) -> Path:
    page = PAGE.format(title=html.escape(f"tunesmith report: {run.path}"), body="\n".join(body))
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out_path)
    return out_path
