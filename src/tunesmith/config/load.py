"""Loading and saving configs: a YAML file (its relative paths rebased) plus `key=value`
overrides into a validated Config, a data-file check, and the Config written back as YAML.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from tunesmith.config.schema import Config, field_docs
from tunesmith.config.validate import config_from_dict
from tunesmith.errors import UserError


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`a.b=1 c=x` -> {"a": {"b": 1}, "c": "x"}; values are read as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r} is not key=value (e.g. train.epochs=3)")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except Exception:  # not only YAMLError: see load_config
            value = raw
        node = tree
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"override {item!r} conflicts with an earlier value for {p!r}")
        node[leaf] = value
    return tree


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` laid over `base`, mapping by mapping."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read an optional YAML file, apply overrides, and return a validated Config. Data files and
    a local model named in the file are relative to the file's folder; overrides to the working
    directory."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            if str(path) in field_docs():  # `tunesmith train data.train x.csv`
                raise UserError(f"{path} is a config key, not a config file: write {path}=VALUE")
            raise UserError(f"config file {path} does not exist")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as e:
            raise UserError(f"config file {path} cannot be read: {_first_line(e)}") from None
        # PyYAML's constructors raise more than YAMLError on odd input: ValueError for an int of
        # over 4300 digits or `!!int 1e4`, AttributeError for `!!timestamp x`, RecursionError for
        # deep nesting (and a UnicodeDecodeError comes from read_text).
        except Exception as e:
            raise UserError(f"config file {path} is not valid YAML: {_yaml_problem(e)}") from None
        if not isinstance(values, dict):
            raise UserError(f"config file {path} must hold a mapping of keys, not {values!r}")
        values = _relative_to(values, path.parent)
    return config_from_dict(merge(values, parse_overrides(overrides or [])))


def _relative_to(values: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A YAML file's data files, and a model or dataset folder that exists beside it, as paths
    from the working directory, so the file works from wherever it is run. output_dir stays
    where the command runs."""

    def rebase(value: Any, must_exist: bool) -> Any:
        if not isinstance(value, str) or not value or value.startswith("~"):
            return value
        if Path(value).is_absolute():
            return value
        joined = folder / value
        if not must_exist:
            return str(joined)
        try:
            found = joined.exists()
        except (OSError, ValueError):  # a name no file system holds (too long, a NUL): no path
            found = False
        return str(joined) if found else value

    values = dict(values)
    if "model" in values:  # a Hub id or builtin: name stays as it is
        values["model"] = rebase(values["model"], must_exist=True)
    data = values.get("data")
    if isinstance(data, dict):
        data = dict(data)
        for key in ("train", "validation", "test"):
            if key in data:
                data[key] = rebase(data[key], must_exist=False)
        if "dataset" in data:
            data["dataset"] = rebase(data["dataset"], must_exist=True)
        values["data"] = data
    return values


def check_files(cfg: Config) -> None:
    """Stop on a data file that does not exist, before any heavy import or work."""
    for key in ("train", "validation", "test"):
        value = getattr(cfg.data, key)
        if value and not Path(value).expanduser().exists():
            raise UserError(f"data.{key}={value}: no such file or folder")


def _yaml_problem(e: Exception) -> str:
    """PyYAML's complaint with its line and column, on one line."""
    mark = getattr(e, "problem_mark", None)
    if isinstance(e, yaml.MarkedYAMLError) and mark is not None:
        return f"{e.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return _first_line(e)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), encoding="utf-8")


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
