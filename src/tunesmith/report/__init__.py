"""`tunesmith report`: one self-contained HTML page about a finished run.

The page inlines its CSS and figures (base64 PNG data URIs), so it survives being mailed or
attached as a single file; the figures are also written to a folder beside it. Validation
predictions are recomputed with the exported model on the data files named in config.yaml, put
through the same column, label, hold-out and sampling steps as training. With `--compare`,
another run's model predicts the same validation rows, and the page sets the two side by side,
class by class.

The flow, module by module: `run` reads the finished run and remakes its splits; `page` writes
the page top to bottom from `sections` (config, data, curves, throughput), `results` (validation
scores and worst rows) and `compare` (another run beside this one), all built with `html`'s kit.
"""

# torch, transformers, datasets, matplotlib and scikit-learn are imported inside the report's
# functions: `tunesmith report` answers a wrong folder, or runs it cannot compare, at once.

from tunesmith.report.compare import check_comparable
from tunesmith.report.html import SECTIONS
from tunesmith.report.page import write_report
from tunesmith.report.results import Scored, score
from tunesmith.report.run import FinishedRun, Splits, load_run, load_splits

__all__ = [
    "SECTIONS",
    "FinishedRun",
    "Scored",
    "Splits",
    "check_comparable",
    "load_run",
    "load_splits",
    "score",
    "write_report",
]
