"""Properties of the edge: whatever a data file, an override or a config file holds, tunesmith
either loads it or stops with one UserError line; no other exception gets through.

The bugs these properties found are pinned next to them as plain examples.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import typing
from pathlib import Path

import datasets
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tunesmith.config import PRECISIONS, TASKS, Config, field_docs, load_config, parse_overrides
from tunesmith.data import read_table
from tunesmith.errors import UserError

# database=None: no example database in the repository; function_scoped_fixture: the autouse
# cache fixture of conftest.py is meant to be shared by all examples of a test. A longer hunt:
# TUNESMITH_PROPERTY_EXAMPLES=1000 pytest tests/test_properties.py
PROPERTY = settings(
    max_examples=int(os.environ.get("TUNESMITH_PROPERTY_EXAMPLES", "50")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def assert_one_line(error: UserError, *must_contain: str) -> str:
    msg = str(error)
    assert msg.strip(), "empty message"
    assert len(msg.splitlines()) == 1, msg
    for part in must_contain:
        assert part in msg, msg
    return msg


def fresh_file(tmp_path_factory, name: str) -> Path:
    # A new folder per example: `datasets` caches a local file by path and mtime, so rewriting the
    # same path within one mtime tick would load the previous example's rows.
    return tmp_path_factory.mktemp("example") / name


# ---------------------------------------------------------------- data files

# Pieces that trip CSV and JSON readers: quotes, separators, every kind of line end, a BOM, NUL,
# characters that `str.splitlines` treats as line breaks, and JSON tokens.
PIECES = [
    ",", "\t", '"', "'", "\n", "\r", "\r\n", " ", "\ufeff", "\x00", "\x85", "\u2028", "é",
    "text", "label", "null", "true", "1", "2.5", "-", "{", "}", "[", "]", ":", '"text": ', "\\",
]  # fmt: skip
JSON_TEXT = st.text(max_size=6) | st.sampled_from(["naïve", "€", "a\x00b", "\u2028", "\ud800"])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | JSON_TEXT,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["text", "label", "a"]), inner, max_size=3)
    ),
    max_leaves=8,
)
LINE_ENDS = st.sampled_from(["\n", "\r\n", "\r", " ", "\n\n"])
CELLS = st.lists(st.sampled_from([*PIECES[:13], "a", "b", "text", "label"]), max_size=4).map(
    "".join
)

raw_bytes = st.binary(max_size=300)
tricky_text = st.lists(st.sampled_from(PIECES), max_size=50).map("".join)
any_text = st.text(max_size=120)
# Lines that are null on their own (a crash once) and raw non-ASCII, which latin-1 below breaks.
json_lines = st.lists(st.tuples(st.none() | JSON_VALUES, LINE_ENDS), max_size=6).map(
    lambda rows: "".join(json.dumps(v, ensure_ascii=False) + end for v, end in rows)
)
json_list = st.lists(JSON_VALUES, max_size=6).map(json.dumps)
TABLES = st.lists(st.lists(CELLS, min_size=1, max_size=4), min_size=1, max_size=6)
csv_rows = TABLES.map(lambda rows: "".join(",".join(row) + "\r\n" for row in rows))


def _csv_text(rows: list[list[str]], delimiter: str) -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter).writerows(rows)
    return out.getvalue()


written_csv = st.builds(_csv_text, TABLES, st.sampled_from([",", "\t"]))
json_objects = st.lists(
    st.dictionaries(st.sampled_from(["text", "label", "a"]), JSON_VALUES, min_size=1),
    min_size=1,
    max_size=5,
).flatmap(
    lambda rows: st.sampled_from(
        ["\n".join(json.dumps(row, ensure_ascii=False) for row in rows), json.dumps(rows)]
    )
)


def _encoded(text: str) -> st.SearchStrategy[bytes]:
    """The text as a file: UTF-8 (with or without a BOM), UTF-16, latin-1, or UTF-8 with one stray
    latin-1 byte, the usual way a file goes bad."""
    utf8 = text.encode("utf-8", "surrogatepass")
    whole = st.sampled_from(
        [
            utf8,
            b"\xef\xbb\xbf" + utf8,
            text.encode("utf-16", "surrogatepass"),
            text.encode("latin-1", "replace"),
        ]
    )
    # Next to a quote, where a stray byte lands inside a text cell (or a name) half the time.
    quotes = [i for i, byte in enumerate(utf8) if byte == ord('"')] or [0]
    stray = st.sampled_from(quotes).map(lambda i: utf8[: i + 1] + b"\xe9" + utf8[i + 1 :])
    return whole | stray


def _contents(suffix: str) -> st.SearchStrategy[bytes]:
    """Anything, but mostly what a file of that type might nearly be."""
    if suffix in (".json", ".jsonl"):
        shaped = json_objects | st.one_of(json_lines, json_list)
    else:
        shaped = st.one_of(csv_rows, written_csv)
    anything = st.one_of(raw_bytes, st.one_of(tricky_text, any_text).flatmap(_encoded))
    return st.one_of(shaped.flatmap(_encoded), anything)


FILES = st.sampled_from([".csv", ".tsv", ".json", ".jsonl"]).flatmap(
    lambda suffix: st.tuples(st.just(suffix), _contents(suffix))
)


@pytest.mark.parametrize("encoding_errors", ["strict", "replace"])
@PROPERTY
@given(file=FILES)
def test_any_file_loads_or_is_one_user_error(tmp_path_factory, encoding_errors, file):
    suffix, content = file
    path = fresh_file(tmp_path_factory, "data" + suffix)
    path.write_bytes(content)
    try:
        ds = read_table(path, encoding_errors=encoding_errors)
    except UserError as e:
        msg = assert_one_line(e, str(path))
        event(f"{suffix} UserError: {msg.removeprefix(f'{path}: ')[:20]}")
        return
    event(f"{suffix} loaded")
    assert isinstance(ds, datasets.Dataset)
    assert len(ds) > 0
    ds[:]  # every value decodes: no half-loaded table that fails later


ROW_TEXTS = st.text(max_size=20) | st.sampled_from(
    ["naïve", "€", "a\x00b", "\u2028", '"quoted"', "tab\there", "line\nbreak", "null", ""]
)
ROWS = st.lists(
    st.fixed_dictionaries({"text": ROW_TEXTS, "label": st.integers(-(2**63), 2**63 - 1)}),
    min_size=1,
    max_size=6,
)


@PROPERTY
@given(
    rows=ROWS,
    as_list=st.booleans(),
    null_at=st.none() | st.integers(0, 6),
    stray_at=st.none() | st.integers(0, 100),
)
def test_json_rows_load_intact_and_broken_ones_are_one_user_error(
    tmp_path_factory, rows, as_list, null_at, stray_at
):
    """Rows as JSON Lines or a JSON list load exactly as written; with a null in place of a row or
    one stray non-UTF-8 byte in a text, the file is refused in one line."""
    items = list(rows)
    if null_at is not None:
        items.insert(min(null_at, len(items)), None)
    if as_list:
        content = json.dumps(items, ensure_ascii=False).encode("utf-8")
    else:
        content = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items).encode("utf-8")
    if stray_at is not None:
        quotes = [i for i, byte in enumerate(content) if byte == ord('"')]
        at = quotes[stray_at % len(quotes)] + 1
        content = content[:at] + b"\xe9" + content[at:]
    path = fresh_file(tmp_path_factory, "rows.json" if as_list else "rows.jsonl")
    path.write_bytes(content)
    if null_at is None and stray_at is None:
        assert read_table(path).to_list() == rows
        return
    with pytest.raises(UserError) as info:
        read_table(path)
    assert_one_line(info.value, str(path))


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        ("null.json", b"null", 1),
        ("lead.jsonl", b'\n  null\n{"text": "a", "label": 1}\n', 2),
        ("later.jsonl", b'{"text": "a", "label": 1}\r\nnull\r\n', 2),
        ("bom.jsonl", b"\xef\xbb\xbfnull\n", 1),
        # Inside a pretty-printed object: pyarrow may start a block at that line all the same.
        ("pretty.json", b'{\n  "text": "a",\n  "label":\n    null\n}\n', 4),
    ],
)
def test_null_starting_a_json_line_is_a_user_error_not_a_segfault(tmp_path, name, content, line):
    # Found by the property: pyarrow's JSON reader segfaults on a block that starts with null.
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        read_table(path)
    assert_one_line(info.value, str(path), f"line {line} starts with null")


def test_null_item_of_a_json_list_is_a_user_error_not_a_segfault(tmp_path):
    # Found by the property: the builder writes each list item as a JSON line, so a null item
    # reaches pyarrow as a `null` line.
    path = tmp_path / "rows.json"
    path.write_text('[null, {"text": "a", "label": 1}]', encoding="utf-8")
    with pytest.raises(UserError) as info:
        read_table(path)
    assert_one_line(info.value, str(path), "item 1 of the JSON list is null")


@pytest.mark.parametrize("indent", [None, 2])
def test_json_with_nulls_inside_rows_still_loads(tmp_path, indent):
    path = tmp_path / "rows.json"
    rows = [{"text": "a", "label": None}, {"text": None, "label": 1}]
    path.write_text(json.dumps(rows, indent=indent), "utf-8")
    assert read_table(path)["label"] == [None, 1]
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a", "label": null}\n{"text": "null", "label": 1}\n', "utf-8")
    assert read_table(path)["text"] == ["a", "null"]


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
@pytest.mark.parametrize("encoding_errors", ["strict", "replace"])
def test_json_that_is_not_utf8_is_a_user_error(tmp_path, suffix, encoding_errors):
    # Found by the property: JSON Lines with a stray byte loaded "fine", and reading the text then
    # raised UnicodeDecodeError wherever it was first used.
    path = tmp_path / ("data" + suffix)
    rows = b'{"text": "ok", "label": 1}\n{"text": "caf\xe9", "label": 0}\n'
    path.write_bytes(rows if suffix == ".jsonl" else b"[" + rows.replace(b"\n", b",")[:-1] + b"]")
    with pytest.raises(UserError) as info:
        read_table(path, encoding_errors=encoding_errors)
    msg = assert_one_line(info.value, str(path), "not valid UTF-8", "line")
    assert "JSON files must be UTF-8" in msg


def test_json_parse_error_names_pyarrows_reason(tmp_path):
    # Seen while exploring the property: the message was the one of the builder's pandas fallback
    # ("DataFrame constructor not properly called!"), not pyarrow's.
    path = tmp_path / "data.json"
    path.write_text("1", encoding="utf-8")
    with pytest.raises(UserError) as info:
        read_table(path)
    assert_one_line(info.value, str(path), "cannot read as JSON: JSON parse error")


# ---------------------------------------------------------------- overrides

KEYS = sorted(field_docs())
IDENTIFIERS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
KEY_PARTS = st.one_of(
    st.sampled_from(sorted({part for key in KEYS for part in key.split(".")})),
    IDENTIFIERS,
    st.just(""),
)
YAMLISH = [
    "[a,b]", "[a, {b: 1}]", "{x: 1}", "null", "~", "none", "1e-4", "1.0e+400", ".nan", ".inf",
    "-.inf", "true", "no", "0", "-1", "0x1f", "1_000", "1:20", "2020-01-01", "[", "{", "'", '"',
    "- a", "a: b", "&a [*a]", "!!int 1e4", "!!timestamp x", "!!binary aGk=", "!!set {a}",
    "!!python/name:os.system", "1" * 400, "9" * 5000, "[" * 600, "a\nb", "",
]  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(YAMLISH),
    st.text(max_size=20),
    st.integers().map(str),
    st.floats().map(str),
)
DOTTED_KEYS = st.one_of(
    st.sampled_from(KEYS),
    st.lists(KEY_PARTS, min_size=1, max_size=4).map(".".join),
    st.text(max_size=12),
)


def _field_types(cls: type = Config, prefix: str = "") -> dict[str, typing.Any]:
    types = {}
    for name, tp in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(tp):
            types.update(_field_types(tp, prefix + name + "."))
        else:
            types[prefix + name] = tp
    return types


FIELD_TYPES = _field_types()
CHOICES = {
    "task": TASKS,
    "train.precision": PRECISIONS,
    "train.on_nonfinite_loss": ("stop", "skip"),
    "data.encoding_errors": ("strict", "replace", "ignore"),
}
ANYTHING = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)


def _plausible(key: str) -> st.SearchStrategy:
    """A value of the field's declared type, within the usual range: often a valid setting."""
    tp = FIELD_TYPES[key]
    if key in CHOICES:
        return st.sampled_from(CHOICES[key])
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if type(None) in typing.get_args(tp):
        tp = args[0]
    if typing.get_origin(tp) is list:
        return st.lists(IDENTIFIERS, min_size=2, max_size=3)
    if typing.get_origin(tp) is dict:  # train.class_weights: a mapping, or its one name
        mapping = st.dictionaries(IDENTIFIERS, st.floats(0.1, 5.0), max_size=3)
        return mapping | st.sampled_from(["balanced", "auto"])
    if typing.get_args(tp) == (int, str):  # data.max_length: a number, or auto
        return st.integers(1, 4096) | st.just("auto")
    return {
        bool: st.booleans(),
        int: st.integers(1, 4096),
        float: st.floats(0.01, 0.9),
        str: st.text(max_size=12),
    }[tp]


def _wild(key: str) -> st.SearchStrategy:
    """The declared type over its whole range, or anything YAML can hold."""
    tp = FIELD_TYPES[key]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if type(None) in typing.get_args(tp):
        tp = args[0]
    typed = {bool: st.booleans(), int: st.integers(), float: st.floats(), str: st.text()}
    if typing.get_origin(tp) is list:
        typed = st.lists(ANYTHING, max_size=3)
    elif typing.get_origin(tp) is dict:
        typed = st.dictionaries(st.text(max_size=4) | st.integers(), ANYTHING, max_size=3)
    elif typing.get_args(tp) == (int, str):
        typed = st.integers() | st.text()
    else:
        typed = typed[tp]
    return typed | ANYTHING | st.sampled_from(YAMLISH)


# A few keys set to plausible values (so that valid configs come up too), a few to wild ones.
CONFIG_VALUES = st.tuples(
    st.lists(st.sampled_from(KEYS), max_size=4, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: _plausible(k) for k in keys})
    ),
    st.lists(st.sampled_from(KEYS), max_size=2, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: _wild(k) for k in keys})
    ),
).map(lambda both: {"data.train": "train.csv", **both[0], **both[1]})


def _as_override(value: typing.Any) -> str:
    """Text stays raw, for YAML to read as the user's shell would pass it; the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


OVERRIDES = st.one_of(
    CONFIG_VALUES.map(lambda values: [f"{k}={_as_override(v)}" for k, v in values.items()]),
    st.lists(
        st.one_of(st.builds(lambda k, v: f"{k}={v}", DOTTED_KEYS, VALUES), st.text(max_size=10)),
        max_size=6,
    ),
)


def assert_typed(obj) -> None:
    """Every field of a returned Config holds its declared type: the config can be trusted."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        tp, value = hints[f.name], getattr(obj, f.name)
        if dataclasses.is_dataclass(tp):
            assert_typed(value)
            continue
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if type(None) in typing.get_args(tp):
            if value is None:
                continue
            # `dict[str, float] | str`: whichever of the two the value is
            (tp,) = [a for a in args if isinstance(value, typing.get_origin(a) or a)]
        elif typing.get_args(tp) == (int, str):  # `int | str`: whichever of the two the value is
            tp = type(value) if type(value) in (int, str) else tp
        if typing.get_origin(tp) is list:
            assert isinstance(value, list) and all(isinstance(v, str) for v in value), f.name
        elif typing.get_origin(tp) is dict:
            assert all(type(k) is str and type(v) is float for k, v in value.items()), f.name
        elif tp is float:
            assert type(value) is float and math.isfinite(value), (f.name, value)
        else:
            assert type(value) is tp, (f.name, value)


def config_or_one_error(load, error_prefix: str = "") -> None:
    """`load()` gives a well-typed Config or raises one UserError line; both are counted."""
    try:
        cfg = load()
    except UserError as e:
        event(f"UserError: {assert_one_line(e).removeprefix(error_prefix)[:18]}")
        return
    event("Config")
    assert isinstance(cfg, Config)
    assert_typed(cfg)


@PROPERTY
@given(overrides=OVERRIDES)
def test_any_overrides_give_a_config_or_one_user_error(overrides):
    config_or_one_error(lambda: load_config(None, overrides))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        # Found by the property: PyYAML raised ValueError/AttributeError/RecursionError, which
        # parse_overrides did not catch; the raw text is now the value and its type is checked.
        ("train.seed=" + "9" * 5000, "train.seed must be a whole number"),
        ("train.seed=!!int 1e4", "train.seed must be a whole number, got '!!int 1e4'"),
        ("train.seed=!!timestamp x", "train.seed must be a whole number"),
        ("label_names=" + "[" * 600, None),  # read as text: the brackets are stripped
        # Found by the property: float(10**400) raised OverflowError.
        ("train.epochs=1" + "0" * 400, "train.epochs must be a number"),
        # Found by the property: NaN and infinity passed every `> 0` check.
        ("train.learning_rate=.nan", "train.learning_rate must be a finite number"),
        ("train.epochs=1.0e+400", "train.epochs must be a finite number"),
        ("train.max_grad_norm=.inf", "train.max_grad_norm must be a finite number"),
        # Found by the property: a key with a line break split the message over two lines.
        ("train.ep\x85ochs=1", "unknown config key 'train.ep\\x85ochs'"),
        ("a\nb=1", "unknown config key 'a\\nb'"),
    ],
)
def test_odd_override_values_are_one_user_error(override, expected):
    overrides = ["data.train=train.csv", override]
    if expected is None:
        assert isinstance(load_config(None, overrides), Config)
        return
    with pytest.raises(UserError) as info:
        load_config(None, overrides)
    assert_one_line(info.value, expected)


def test_override_conflict_quotes_the_section():
    with pytest.raises(UserError) as info:
        parse_overrides(["train=3", "train.epochs=2"])
    assert_one_line(info.value, "earlier value for 'train'")


# ---------------------------------------------------------------- config files


def _nest(values: dict[str, typing.Any]) -> dict[str, typing.Any]:
    tree: dict[str, typing.Any] = {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


YAML_KEYS = st.one_of(
    IDENTIFIERS, st.integers(), st.none(), st.booleans(), st.dates(), st.text(max_size=6)
)
CONFIG_DICTS = st.builds(
    lambda known, extra: {**extra, **known},
    CONFIG_VALUES.map(_nest),
    st.dictionaries(YAML_KEYS, JSON_VALUES | st.dates(), max_size=2),
)
YAML_DOCUMENTS = st.one_of(
    CONFIG_DICTS.map(lambda d: yaml.safe_dump(d, allow_unicode=True, sort_keys=False)),
    CONFIG_DICTS.map(lambda d: yaml.safe_dump(d, default_flow_style=True, sort_keys=False)),
    JSON_VALUES.map(yaml.safe_dump),
    st.lists(st.sampled_from([*YAMLISH, ": ", "\n", "  ", "- ", "data:", "train:", "#"])).map(
        "".join
    ),
    st.text(max_size=80),
)


@PROPERTY
@given(document=YAML_DOCUMENTS)
def test_any_yaml_file_gives_a_config_or_one_user_error(tmp_path_factory, document):
    path = fresh_file(tmp_path_factory, "config.yaml")
    path.write_text(document, encoding="utf-8", errors="surrogatepass")
    config_or_one_error(lambda: load_config(path, []), f"config file {path} ")


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        # Found by the property: a key that is not a string raised TypeError (`prefix + 1`).
        ("data: {train: t.csv}\n1: 2\n", "unknown config key 1"),
        ("data: {train: t.csv, 1: 2}\n", "unknown config key data.1"),
        ("data: {train: t.csv}\n~: x\n", "unknown config key None"),
        ("data: {train: t.csv}\n2020-01-01: x\n", "unknown config key 2020-01-01"),
        # Found by the property: PyYAML errors that are not YAMLError.
        ("train: {seed: " + "9" * 5000 + "}\n", "is not valid YAML"),
        ("train: {seed: !!timestamp x}\n", "is not valid YAML"),
        ("a: " + "[" * 600 + "]" * 600 + "\n", "is not valid YAML"),
        # Found by the property: OverflowError and non-finite floats.
        ("data: {train: t.csv}\ntrain: {epochs: 1" + "0" * 400 + "}\n", "must be a number"),
        ("data: {train: t.csv}\ntrain: {warmup_ratio: .nan}\n", "must be a finite number"),
    ],
)
def test_odd_yaml_files_are_one_user_error(tmp_path, document, expected):
    path = tmp_path / "config.yaml"
    path.write_text(document, encoding="utf-8")
    with pytest.raises(UserError) as info:
        load_config(path, [])
    assert_one_line(info.value, expected)
