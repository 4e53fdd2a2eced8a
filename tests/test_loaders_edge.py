"""Loader edge cases: repeated column names, mixed label types, huge cells, Windows files, and a
file large enough to show that rows are memory-mapped rather than held in memory."""

from __future__ import annotations

import csv
import json
import logging
import threading
from pathlib import Path

import datasets
import pytest
from datasets.table import MemoryMappedTable

from tunesmith.config import DataConfig
from tunesmith.data import Columns, detect_columns, read_table
from tunesmith.errors import UserError
from tunesmith.tasks.labels import infer_labels


def user_error(fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1, msg
    return msg


# ---------------------------------------------------------------- repeated column names


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("data.csv", "text,label,text\nhello,1,there\nbye,0,now\n"),
        ("data.tsv", "text\tlabel\ttext\nhello\t1\tthere\nbye\t0\tnow\n"),
    ],
)
def test_repeated_column_name_is_a_user_error(tmp_path, name, content):
    # pandas would silently load the second one as `text.1`.
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    msg = user_error(read_table, path)
    assert str(path) in msg
    assert "'text'" in msg and "'label'" not in msg
    assert "rename" in msg


def test_every_repeated_name_is_listed_once(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("label,text,label,text,text,id\na,b,c,d,e,1\n", encoding="utf-8")
    msg = user_error(read_table, path)
    assert "'label', 'text'" in msg and "'id'" not in msg


def test_repeated_name_behind_a_bom_and_blank_lines(tmp_path):
    # pandas drops the BOM and skips leading blank lines; the header check does the same.
    path = tmp_path / "data.tsv"
    path.write_bytes("\r\n\r\ntext\tlabel\ttext\r\na\t1\tb\r\n".encode("utf-8-sig"))
    assert "'text'" in user_error(read_table, path)


def test_repeated_quoted_name_with_a_line_break_stays_on_one_line(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('"my\ntext",label,"my\ntext"\na,1,b\n', encoding="utf-8")
    assert "'my\\ntext'" in user_error(read_table, path)


def test_repeated_name_in_a_latin1_header(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes("r\xe9sum\xe9,label,r\xe9sum\xe9\na,1,b\n".encode("latin-1"))
    assert "'résumé'" in user_error(read_table, path, encoding="latin-1")
    # Read as UTF-8 with replacement the names still repeat (both become 'r\ufffdsum\ufffd').
    assert "rename" in user_error(read_table, path, encoding_errors="replace")


def test_names_that_differ_in_case_or_spaces_are_not_repeats(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,Text, text,label\na,b,c,1\n", encoding="utf-8")
    assert read_table(path).column_names == ["text", "Text", " text", "label"]


def test_repeated_empty_header_cells_are_left_to_pandas(tmp_path):
    # Not a repeated *name*: pandas calls them `Unnamed: N`, and column detection then names them.
    path = tmp_path / "data.csv"
    path.write_text("text,,label,\na,x,1,y\n", encoding="utf-8")
    assert read_table(path).column_names == ["text", "Unnamed: 1", "label", "Unnamed: 3"]


def test_a_header_the_csv_module_cannot_read_is_left_to_the_builder(tmp_path):
    # An unclosed quote: the header check gives up and the builder's error is reported.
    path = tmp_path / "data.csv"
    path.write_text('"text,label\na,1\n', encoding="utf-8")
    assert "cannot read as CSV" in user_error(read_table, path)


def test_repeated_key_in_a_json_lines_object_is_a_user_error(tmp_path):
    # pyarrow refuses it; the message is pyarrow's, naming the key and the row.
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a", "label": 1, "text": "b"}\n', encoding="utf-8")
    msg = user_error(read_table, path)
    assert str(path) in msg and "Column(/text) was specified twice in row 0" in msg


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("ragged.csv", "text,label\ngood film,positive\nbad,film,negative,extra\n"),
        ("twice.jsonl", '{"text": "a", "label": 1, "text": "b"}\n'),
    ],
)
def test_the_builders_own_error_logs_stay_quiet(tmp_path, name, content):
    # The CLI prints the UserError as its one stderr line; the builders used to log another
    # ("Failed to read file ...") before it. `datasets` logs do not reach the root logger, so the
    # records are caught on its own.
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    records: list[logging.LogRecord] = []
    catcher = logging.Handler()
    catcher.emit = records.append
    logging.getLogger("datasets").addHandler(catcher)
    try:
        user_error(read_table, path)
    finally:
        logging.getLogger("datasets").removeHandler(catcher)
    assert [r.getMessage() for r in records if r.levelno >= logging.ERROR] == []


# ---------------------------------------------------------------- mixed label types


def test_mixed_label_types_in_json_lines_stop_at_label_inference(tmp_path):
    path = tmp_path / "data.jsonl"
    rows = [{"text": "a", "label": 1}, {"text": "b", "label": "pos"}, {"text": "c", "label": 2.5}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    ds = read_table(path)  # `datasets` keeps each value as it was (a Json column)
    assert ds["label"] == [1, "pos", 2.5]
    columns = detect_columns(ds, DataConfig(), str(path))
    assert columns == Columns(text="text", text_pair=None, label="label")
    for task in ("auto", "classification", "regression"):
        msg = user_error(infer_labels, ds, "label", task, None, str(path))
        assert str(path) in msg and "label" in msg


def test_mixed_ints_and_names_in_a_csv_column_are_read_as_names(tmp_path):
    # A CSV column is one type: pandas reads 1, pos, 2.5 as the strings "1", "pos", "2.5".
    path = tmp_path / "data.csv"
    path.write_text("text,label\na,1\nb,pos\nc,2.5\n", encoding="utf-8")
    assert read_table(path)["label"] == ["1", "pos", "2.5"]


# ---------------------------------------------------------------- huge cells


def _long_text(n: int = 100_000) -> str:
    # Quotes, separators, line ends and non-ASCII inside one cell: everything a writer must quote.
    piece = 'word, "quoted"\ttab\nnew line\r\nand é ünïcödé '
    return (piece * (n // len(piece) + 1))[:n]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl"])
def test_a_100000_character_cell_loads_intact(tmp_path, suffix):
    text = _long_text()
    rows = [{"text": text, "label": "pos"}, {"text": "short", "label": "neg"}]
    path = tmp_path / ("data" + suffix)
    if suffix in (".csv", ".tsv"):
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(
                f, ["text", "label"], delimiter="," if suffix == ".csv" else "\t"
            )
            writer.writeheader()
            writer.writerows(rows)
    elif suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    ds = read_table(path)
    assert len(ds) == 2
    assert ds[0]["text"] == text
    assert ds["label"] == ["pos", "neg"]


# ---------------------------------------------------------------- Windows files


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig"])
def test_windows_tsv_with_bom_and_quoted_line_breaks(tmp_path, encoding):
    # Excel's "Unicode text": BOM, CRLF everywhere, including inside quoted cells.
    path = tmp_path / "data.tsv"
    content = (
        "sentence1\tsentence2\tlabel\r\n"
        '"first\r\nline"\tplain\t1\r\n'
        '"has\ttab"\t"say ""hi"""\t0\r\n'
        "trailing\tspace \t1\r\n"
    )
    path.write_bytes(content.encode("utf-8-sig"))
    ds = read_table(path, encoding=encoding)
    assert ds.column_names == ["sentence1", "sentence2", "label"]
    assert ds["sentence1"] == ["first\r\nline", "has\ttab", "trailing"]
    assert ds["sentence2"] == ["plain", 'say "hi"', "space "]
    assert ds["label"] == [1, 0, 1]
    columns = detect_columns(ds, DataConfig(), str(path))
    assert columns == Columns(text="sentence1", text_pair="sentence2", label="label")


# ---------------------------------------------------------------- a large file


def _memory_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


class _PeakAnonymousMemory(threading.Thread):
    """Samples RssAnon: the process's own memory (heap, Arrow buffers), not counting the pages of
    memory-mapped files, which the kernel can drop and reread at any time."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = _memory_kib("RssAnon")
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.005):
            self.peak = max(self.peak, _memory_kib("RssAnon"))

    def __enter__(self) -> _PeakAnonymousMemory:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join()
        self.peak = max(self.peak, _memory_kib("RssAnon"))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
def test_a_60mb_csv_is_memory_mapped_not_held_in_memory(tmp_path):
    rows, filler = 400_000, "lorem ipsum dolor sit amet " * 5  # ~150 bytes a row
    path = tmp_path / "large.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write("id,text,label\n")
        for start in range(0, rows, 10_000):
            f.write(
                "".join(
                    f"{i},{filler}row {i},{'pos' if i % 2 else 'neg'}\n"
                    for i in range(start, start + 10_000)
                )
            )
    size_kib = path.stat().st_size // 1024
    assert 55_000 < size_kib < 70_000

    small = tmp_path / "small.csv"  # load the CSV builder's modules before measuring
    small.write_text("text,label\na,1\n", encoding="utf-8")
    read_table(small)

    before = _memory_kib("RssAnon")
    with _PeakAnonymousMemory() as memory:
        ds = read_table(path)
        assert len(ds) == rows
    growth = memory.peak - before
    assert growth < 0.5 * size_kib, f"memory grew {growth} KiB reading a {size_kib} KiB file"
    assert isinstance(ds.data, MemoryMappedTable)  # the rows live in the Arrow cache file
    assert isinstance(ds, datasets.Dataset) and ds.cache_files
    assert ds[rows - 1] == {"id": rows - 1, "text": f"{filler}row {rows - 1}", "label": "pos"}
