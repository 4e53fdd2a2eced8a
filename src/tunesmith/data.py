"""Load raw splits (local files, saved datasets, Hub names) and find their text and label columns.

Everything here is the edge: a file that cannot be read, a missing column or an empty cell ends in
one UserError naming the file, column or rows. Files are read through `datasets` builders, so they
land in memory-mapped Arrow tables and large files do not fill memory.
"""

from __future__ import annotations

import codecs
import csv
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import datasets
from datasets import ClassLabel, Dataset, DatasetDict
from datasets.utils.json import ujson_loads

from tunesmith.config import DataConfig
from tunesmith.errors import UserError

# Extension -> (datasets builder, extra builder kwargs).
FILE_FORMATS = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"sep": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}
# Checked in order; the first pair (or single column) present in the data wins.
TEXT_PAIR_COLUMNS = [
    ("sentence1", "sentence2"),
    ("text", "text_pair"),
    ("question", "passage"),
    ("premise", "hypothesis"),
    ("question1", "question2"),
    ("question", "sentence"),
    ("sentence_a", "sentence_b"),
    ("query", "document"),
]
TEXT_COLUMNS = ["text", "sentence", "review", "content", "tweet", "document", "comment", "body"]
LABEL_COLUMNS = ["label", "labels", "sentiment", "score", "target", "class", "category", "y"]
HUB_SPLIT_NAMES = {
    "train": ["train"],
    "validation": ["validation", "validation_matched", "dev", "valid", "val"],
    "test": ["test", "test_matched"],
}


@dataclass(frozen=True)
class Columns:
    """Where a split keeps its inputs: one text column or a pair, and the label column if any."""

    text: str
    text_pair: str | None
    label: str | None

    @property
    def texts(self) -> list[str]:
        return [self.text] if self.text_pair is None else [self.text, self.text_pair]


def read_table(
    path: str | Path, encoding: str = "utf-8", encoding_errors: str = "strict"
) -> Dataset:
    """One file (CSV, TSV, JSON, JSONL, Parquet) or a `save_to_disk` folder -> Dataset."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if path.is_dir():
        return _load_saved(path)
    fmt, kwargs = FILE_FORMATS.get(path.suffix.lower(), (None, {}))
    if fmt is None:
        known = ", ".join(FILE_FORMATS)
        raise UserError(f"{path}: unknown file type {path.suffix!r}; use one of {known}")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty")
    if fmt == "csv":
        kwargs = {**kwargs, "encoding": encoding, "encoding_errors": encoding_errors}
        _check_text(path, encoding, encoding_errors)
        _check_header(path, kwargs.get("sep", ","), encoding, encoding_errors)
    elif fmt == "json":
        _check_text(path, "utf-8", "replace")  # NUL bytes only: _check_json names bad UTF-8
        _check_json(path)
    try:
        with _builder_logs_silenced(fmt):
            ds = datasets.load_dataset(fmt, data_files=str(path), split="train", **kwargs)
    except Exception as e:  # the builders wrap pandas/pyarrow errors; report the root cause
        raise UserError(_explain_read_error(path, fmt, e, encoding)) from None
    if len(ds) == 0:
        raise UserError(f"{path}: no rows")
    return ds


@contextmanager
def _builder_logs_silenced(fmt: str) -> Iterator[None]:
    """The CSV and JSON builders log an error line ("Failed to read file ...") before raising;
    read_table explains the error itself, in the one line a user mistake gets."""
    logger = logging.getLogger(f"datasets.packaged_modules.{fmt}.{fmt}")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_text(path: Path, encoding: str, errors: str) -> None:
    """Stop on a file that is not text (NUL bytes: an image, a spreadsheet, a zip renamed) or, with
    strict decoding, on the first line that is not valid in `encoding`, naming that line."""
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise UserError(f"data.encoding={encoding} is not a known text encoding") from None
    wide = codec.name.startswith(("utf-16", "utf-32"))  # NUL bytes are normal there
    decoder = codec.incrementaldecoder("strict")
    done = 0  # bytes decoded before this block
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            if not wide and b"\0" in block:
                raise UserError(
                    f"{path}: not a text file (it holds NUL bytes, as binary files such as "
                    f"spreadsheets and archives do); export the data as CSV, TSV, JSON or Parquet"
                )
            if errors != "strict" or wide:
                continue
            try:
                decoder.decode(block)
            except UnicodeDecodeError as e:
                f.seek(0)
                before = f.read(done + e.start)
                line = before.count(b"\n") + 1
                column = len(before) - (before.rfind(b"\n") + 1) + 1
                raise UserError(
                    f"{path}: line {line} is not valid {encoding} ({e.reason}, byte {column} of "
                    f"the line); set data.encoding to the file's encoding (e.g. latin-1) or "
                    f"data.encoding_errors=replace"
                ) from None
            done += len(block)


def _check_header(path: Path, delimiter: str, encoding: str, errors: str) -> None:
    """Stop on a header that repeats a column name, which pandas would rename to `name.1`."""
    header: list[str] = []
    try:
        with path.open(encoding=encoding, errors=errors, newline="") as f:
            for number, row in enumerate(csv.reader(f, delimiter=delimiter)):
                if number == 0 and row:
                    row[0] = row[0].removeprefix("\ufeff")  # pandas drops a BOM too
                    row = [] if row == [""] else row
                if row:  # pandas skips blank lines before the header
                    header = row
                    break
    except (UnicodeError, LookupError, csv.Error):
        return  # the builder reads the file again and explains what is wrong with it
    repeated = [name for name, n in Counter(header).items() if n > 1 and name]
    if repeated:
        names = ", ".join(repr(name) for name in repeated)
        raise UserError(
            f"{path}: the header repeats the column name(s) {names}; rename them so that every "
            f"column has its own name"
        )


def _check_json(path: Path) -> None:
    """Stop on what the JSON builder mishandles: bytes that are not UTF-8 (a JSON Lines file would
    load them as broken strings that fail much later) and a `null` where a row belongs, which makes
    pyarrow's JSON reader crash the process (a segfault, not an exception)."""
    with path.open("rb") as f:
        head = f.read(4096).removeprefix(codecs.BOM_UTF8)
        is_list = head.lstrip(b" \t\r\n").startswith(b"[")
        f.seek(0)
        for number, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(
                    f"{path}: line {number} is not valid UTF-8 ({e.reason}, byte {e.start + 1} "
                    f"of the line); JSON files must be UTF-8 (data.encoding is for CSV/TSV): "
                    f"save it as UTF-8"
                ) from None
            if is_list:
                continue
            if number == 1:
                line = line.removeprefix(codecs.BOM_UTF8)
            # Also a null on its own line inside a pretty-printed object: pyarrow cuts a file in
            # blocks at line ends, and such a line may start one.
            if any(part.lstrip(b" \t").startswith(b"null") for part in line.split(b"\r")):
                raise UserError(
                    f"{path}: line {number} starts with null; each line must be one JSON object "
                    f"(a row), or the file one JSON list of rows: remove that null or move it "
                    f"onto the line of its key"
                )
    if not is_list:
        return
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    if b"null" not in data:
        return
    try:
        rows = ujson_loads(data)  # the parser the builder uses, so both see the same items
    except (ValueError, RecursionError):
        return  # the builder reports the syntax error
    empty = next((i for i, row in enumerate(rows) if row is None), None)
    if empty is not None:
        raise UserError(
            f"{path}: item {empty + 1} of the JSON list is null; every item must be one row "
            f'like {{"text": ..., "label": ...}}: remove or fix it'
        )


def _load_saved(path: Path) -> Dataset:
    if not any((path / n).exists() for n in ("state.json", "dataset_dict.json")):
        raise UserError(
            f"{path}: a folder, but not one written by Dataset.save_to_disk; give a data file"
        )
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as e:  # e.g. an IndexError for a saved dataset with no rows (zero shards)
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{path}: cannot load this save_to_disk folder ({detail}); it may have no rows or be "
            f"damaged: save it again"
        ) from None
    if isinstance(loaded, DatasetDict):
        if "train" not in loaded:
            raise UserError(f"{path}: saved DatasetDict has no 'train' split ({list(loaded)})")
        loaded = loaded["train"]
    if len(loaded) == 0:
        raise UserError(f"{path}: no rows")
    return loaded


def _explain_read_error(path: Path, fmt: str, error: BaseException, encoding: str) -> str:
    chain, e = [], error
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        if isinstance(e, UnicodeDecodeError):
            return (
                f"{path}: not valid {encoding} ({e.reason} at byte {e.start}); "
                f"set data.encoding=latin-1 or data.encoding_errors=replace"
            )
    # What the builders say when a file holds a header (or blank lines) but no rows.
    empty = ("corresponds to no data", "BatchSize must be greater than 0")
    if any(marker in str(e) for e in chain for marker in empty):
        return f"{path}: no rows (only a header or blank lines); add data rows"
    # pyarrow's own JSON message ("Column(/text) was specified twice in row 0") beats the pandas
    # error of the builder's fallback reader, which is what the chain ends with.
    parse_errors = [e for e in chain if str(e).startswith("JSON parse error")]
    root = parse_errors[0] if parse_errors else chain[-1]
    detail = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
    return f"{path}: cannot read as {fmt.upper()}: {detail}"


def load_splits(cfg: DataConfig) -> dict[str, Dataset]:
    """The configured splits: 'train' always; 'validation' and 'test' when given or found."""
    splits: dict[str, Dataset] = {}
    if cfg.dataset:
        splits.update(_load_hub(cfg.dataset, cfg.dataset_config))
    for name in ("train", "validation", "test"):
        path = getattr(cfg, name)
        if path:
            splits[name] = read_table(path, cfg.encoding, cfg.encoding_errors)
    if "train" not in splits:
        raise UserError(f"data.dataset={cfg.dataset} has no train split; set data.train=FILE")
    return splits


def _load_hub(name: str, subset: str | None) -> dict[str, Dataset]:
    try:
        loaded = datasets.load_dataset(name, subset)
    except Exception as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"data.dataset={name}: cannot load it ({detail}); without network only datasets in "
            f"the local cache (~/.cache/huggingface/datasets) or local folders load"
        ) from None
    if not isinstance(loaded, DatasetDict):
        loaded = DatasetDict({"train": loaded})
    found = {}
    for split, candidates in HUB_SPLIT_NAMES.items():
        for candidate in candidates:
            if candidate in loaded and len(loaded[candidate]) > 0 and _labelled(loaded[candidate]):
                found[split] = loaded[candidate]
                break
    return found


def _labelled(ds: Dataset) -> bool:
    """False for hidden-label splits such as GLUE's test sets, whose labels are all -1."""
    if "label" not in ds.column_names or not isinstance(ds.features["label"], ClassLabel):
        return True
    return max(ds["label"]) >= 0


def detect_columns(ds: Dataset, cfg: DataConfig, source: str, need_label: bool = True) -> Columns:
    """Text/pair/label columns from the config, else by the usual names."""
    names = list(ds.column_names)
    found = ", ".join(names)

    def check(key: str, column: str) -> str:
        if column not in names:
            raise UserError(f"{source}: {key}={column} is not a column (columns: {found})")
        return column

    text = check("data.text_column", cfg.text_column) if cfg.text_column else None
    pair = cfg.text_pair_column
    if pair and pair.lower() == "none":
        pair = None
    elif pair:
        pair = check("data.text_pair_column", pair)
    elif text is None:
        for first, second in TEXT_PAIR_COLUMNS:
            if first in names and second in names:
                text, pair = first, second
                break
    if text is None:
        text = next((c for c in TEXT_COLUMNS if c in names), None)
    if text is None:
        raise UserError(
            f"{source}: no text column found (columns: {found}); set data.text_column=NAME"
        )
    label = check("data.label_column", cfg.label_column) if cfg.label_column else None
    if label is None:
        label = next((c for c in LABEL_COLUMNS if c in names and c not in (text, pair)), None)
    if label is None and need_label:
        raise UserError(
            f"{source}: no label column found (columns: {found}); set data.label_column=NAME"
        )
    return Columns(text=text, text_pair=pair, label=label)


def check_texts(ds: Dataset, columns: Columns, source: str, drop_empty: bool) -> Dataset:
    """Stop on empty or null text cells (naming the rows), or drop them when asked."""
    bad: list[int] = []
    for column in columns.texts:
        for i, value in enumerate(ds[column]):
            if value is None or (isinstance(value, str) and not value.strip()):
                bad.append(i)
    if not bad:
        return ds
    bad = sorted(set(bad))
    if drop_empty:
        keep = sorted(set(range(len(ds))) - set(bad))
        if not keep:
            raise UserError(f"{source}: every row has an empty text")
        return ds.select(keep)
    shown = ", ".join(str(i + 1) for i in bad[:10]) + (" ..." if len(bad) > 10 else "")
    raise UserError(
        f"{source}: {len(bad)} row(s) with empty text in {'/'.join(columns.texts)} "
        f"(rows {shown}, counting from 1 after the header); fix them or set data.drop_empty=true"
    )
