"""Configuration: a YAML file plus dotted overrides, types coerced, mistakes named in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tunesmith.config import Config, config_from_dict, field_docs, load_config, parse_overrides
from tunesmith.errors import UserError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def error_of(overrides: list[str], path: Path | None = None) -> str:
    with pytest.raises(UserError) as info:
        load_config(path, overrides)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def write_yaml(path: Path, values) -> Path:
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def test_yaml_file_and_overrides_with_overrides_winning(tmp_path):
    path = write_yaml(
        tmp_path / "cfg.yaml",
        {
            "model": "some/model",
            "data": {"train": "train.csv", "max_length": 32},
            "train": {"epochs": 5, "learning_rate": 0.001},
        },
    )
    cfg = load_config(path, ["train.epochs=2", "data.validation=val.csv"])
    assert isinstance(cfg, Config)
    assert cfg.model == "some/model"  # no such folder beside the file: a Hub id
    assert cfg.data.train == str(tmp_path / "train.csv")  # beside the YAML file
    assert cfg.data.validation == "val.csv"  # an override: from the working directory
    assert cfg.data.max_length == 32
    assert cfg.train.epochs == 2.0
    assert cfg.train.learning_rate == pytest.approx(0.001)
    # Untouched fields keep their defaults.
    assert cfg.train.seed == Config().train.seed


def test_overrides_alone_without_a_file():
    cfg = load_config(None, ["data.train=x.csv"])
    assert cfg.data.train == "x.csv"
    assert cfg.task == "auto"


def test_overrides_are_coerced_to_field_types():
    cfg = load_config(
        None,
        [
            "data.train=t.csv",
            "train.epochs=3",
            "train.learning_rate=1e-4",
            "data.max_length=64",
            "overwrite=true",
            "label_names=[a,b]",
            "train.max_steps=7",
        ],
    )
    assert cfg.train.epochs == 3.0 and isinstance(cfg.train.epochs, float)
    # PyYAML reads `1e-4` as a string; it must still become a float.
    assert cfg.train.learning_rate == pytest.approx(1e-4)
    assert isinstance(cfg.train.learning_rate, float)
    assert cfg.data.max_length == 64 and isinstance(cfg.data.max_length, int)
    assert cfg.overwrite is True
    assert cfg.label_names == ["a", "b"]
    assert cfg.train.max_steps == 7 and isinstance(cfg.train.max_steps, int)


def test_yaml_strings_are_coerced_too(tmp_path):
    path = write_yaml(
        tmp_path / "cfg.yaml",
        {
            "overwrite": "yes",
            "label_names": ["neg", "pos"],
            "data": {"train": "t.csv", "max_length": "48", "text_pair_column": "none"},
            "train": {"learning_rate": "2e-5", "micro_batch_size": None},
        },
    )
    cfg = load_config(path)
    assert cfg.overwrite is True
    assert cfg.label_names == ["neg", "pos"]
    assert cfg.data.max_length == 48
    assert cfg.train.learning_rate == pytest.approx(2e-5)
    assert cfg.train.micro_batch_size is None


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("0", False), ("no", False)])
def test_bool_overrides_accept_one_and_zero(raw, expected):
    assert load_config(None, ["data.train=t.csv", f"overwrite={raw}"]).overwrite is expected


def test_text_pair_column_none_is_kept_as_an_explicit_choice():
    """`none` means single sentences; it must not collapse into "unset" (auto-detect)."""
    cfg = load_config(None, ["data.train=t.csv", "data.text_pair_column=none"])
    assert cfg.data.text_pair_column is not None
    assert cfg.data.text_pair_column.lower() == "none"
    assert load_config(None, ["data.train=t.csv"]).data.text_pair_column is None


def test_optional_fields_accept_none():
    cfg = load_config(None, ["data.train=t.csv", "train.max_steps=none"])
    assert cfg.train.max_steps is None


def test_parse_overrides_builds_a_tree():
    tree = parse_overrides(["a.b=1", "a.c=x", "d=true", "e=", "f=[1, 2]"])
    assert tree == {"a": {"b": 1, "c": "x"}, "d": True, "e": "", "f": [1, 2]}


def test_parse_overrides_keeps_equals_signs_in_the_value():
    assert parse_overrides(["model=a=b"]) == {"model": "a=b"}


@pytest.mark.parametrize("item", ["train.epochs", "=3"])
def test_override_without_key_value_is_an_error(item):
    with pytest.raises(UserError) as info:
        parse_overrides([item])
    msg = str(info.value)
    assert item in msg and "key=value" in msg and "\n" not in msg


def test_override_conflicting_with_a_scalar_is_an_error():
    with pytest.raises(UserError) as info:
        parse_overrides(["train=3", "train.epochs=2"])
    assert "train" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("override", "suggestion"),
    [
        ("train.epoch=3", "train.epochs"),
        ("epochs=3", "train.epochs"),
        ("data.max_lenght=64", "data.max_length"),
        ("learning_rate=1e-3", "train.learning_rate"),
        ("modle=x", "model"),
    ],
)
def test_unknown_key_suggests_the_closest_valid_key(override, suggestion):
    msg = error_of(["data.train=t.csv", override])
    key = override.split("=")[0]
    assert f"unknown config key {key}" in msg
    assert f"did you mean {suggestion}" in msg


def test_unknown_key_in_yaml_file(tmp_path):
    path = write_yaml(tmp_path / "cfg.yaml", {"data": {"train": "t.csv"}, "train": {"epoch": 1}})
    msg = error_of([], path)
    assert "train.epoch" in msg and "did you mean train.epochs" in msg


def test_unknown_key_with_nothing_close_has_no_suggestion():
    msg = error_of(["data.train=t.csv", "zzzqqq=1"])
    assert "unknown config key zzzqqq" in msg
    assert "did you mean" not in msg


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.max_steps=abc", "train.max_steps must be a whole number"),
        ("train.max_steps=2.5", "train.max_steps must be a whole number"),
        ("train.epochs=many", "train.epochs must be a number"),
        ("overwrite=maybe", "overwrite must be true or false"),
        ("data.max_length=true", "data.max_length must be auto or a whole number"),
        ("label_names=3", "label_names must be a list"),
        ("model=[a, b]", "model must be a single value"),
    ],
)
def test_wrong_type_names_the_key(override, expected):
    msg = error_of(["data.train=t.csv", override])
    assert expected in msg


def test_section_given_a_scalar_is_an_error():
    msg = error_of(["data.train=t.csv", "train=3"])
    assert "train must be a mapping" in msg


def test_several_problems_are_reported_together_on_one_line():
    msg = error_of(["data.train=t.csv", "train.epoch=3", "train.max_steps=abc", "modle=x"])
    assert "train.epoch" in msg
    assert "train.max_steps" in msg
    assert "modle" in msg
    assert msg.count(";") >= 2


def test_several_validation_problems_are_reported_together():
    msg = error_of(["task=foo", "train.precision=fp8"])
    assert "task must be one of" in msg
    assert "train.precision must be one of" in msg
    assert "no training data" in msg


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "task=foo",
            "task must be one of auto, classification, regression, masked-lm, causal-lm, got 'foo'",
        ),
        ("train.precision=fp8", "train.precision must be one of auto, fp32, bf16, fp16"),
        ("data.encoding_errors=loud", "data.encoding_errors must be strict, replace or ignore"),
        ("data.validation_fraction=1.5", "data.validation_fraction must be between 0 and 1"),
        ("train.epochs=0", "train.epochs must be > 0"),
        ("train.learning_rate=-1", "train.learning_rate must be > 0"),
        ("train.max_steps=0", "train.max_steps must be > 0"),
        ("few_shot.probe_c=0", "few_shot.probe_c must be > 0"),
        ("train.evals_per_epoch=-1", "train.evals_per_epoch must be >= 0, got -1"),
        ("few_shot.label_name_template=about", "few_shot.label_name_template must hold {}"),
        ("train.warmup_ratio=1", "train.warmup_ratio must be in [0, 1)"),
        ("train.weight_decay=-0.1", "train.weight_decay and train.max_grad_norm must be >= 0"),
    ],
)
def test_invalid_values(override, expected):
    assert expected in error_of(["data.train=t.csv", override])


@pytest.mark.parametrize("task", ["auto", "classification", "regression"])
def test_valid_tasks(task):
    assert load_config(None, ["data.train=t.csv", f"task={task}"]).task == task


def test_a_fixed_length_must_fit_the_token_budget():
    error = error_of(["data.train=t.csv", "data.max_length=128", "train.max_tokens_per_batch=16"])
    assert "train.max_tokens_per_batch=16 cannot hold one example of data.max_length=128" in error
    # auto never picks a length past the budget
    assert load_config(None, ["data.train=t.csv", "train.max_tokens_per_batch=16"])


def test_small_token_budget_is_fine_with_a_fixed_micro_batch():
    cfg = load_config(
        None, ["data.train=t.csv", "train.max_tokens_per_batch=16", "train.micro_batch_size=4"]
    )
    assert cfg.train.micro_batch_size == 4


def test_missing_training_data():
    msg = error_of([])
    assert "no training data" in msg
    assert "data.train=FILE" in msg and "data.dataset=NAME" in msg


def test_dataset_alone_counts_as_training_data():
    assert load_config(None, ["data.dataset=glue", "data.dataset_config=mrpc"]).data.dataset == (
        "glue"
    )


@pytest.mark.parametrize("content", ["- a\n- b\n", "just a string\n", "42\n"])
def test_yaml_file_that_is_not_a_mapping(tmp_path, content):
    path = tmp_path / "cfg.yaml"
    path.write_text(content, encoding="utf-8")
    msg = error_of(["data.train=t.csv"], path)
    assert str(path) in msg
    assert "must hold a mapping" in msg


def test_empty_yaml_file_is_an_empty_config(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("", encoding="utf-8")
    assert load_config(path, ["data.train=t.csv"]).data.train == "t.csv"


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("data: {train: [unclosed\n  x: : :\n", encoding="utf-8")
    msg = error_of([], path)
    assert str(path) in msg and "not valid YAML" in msg


def test_missing_config_file(tmp_path):
    path = tmp_path / "nope.yaml"
    msg = error_of(["data.train=t.csv"], path)
    assert str(path) in msg and "does not exist" in msg


def test_config_from_dict_matches_load_config():
    cfg = config_from_dict({"data": {"train": "t.csv"}, "train": {"epochs": "2"}})
    assert cfg.train.epochs == 2.0
    with pytest.raises(UserError, match=r"did you mean train\.epochs"):
        config_from_dict({"data": {"train": "t.csv"}, "train": {"epoch": 2}})


def _all_keys(cls=Config, prefix=""):
    import dataclasses

    keys = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            keys += _all_keys(type(default), prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys


def test_field_docs_cover_every_key_with_a_doc():
    docs = field_docs()
    assert set(docs) == set(_all_keys())
    for key, (type_name, doc, _default) in docs.items():
        assert type_name, key
        assert doc.strip(), f"{key} has no doc"
        assert "\n" not in doc
    assert docs["train.epochs"][2] == 3.0
    assert "float" in docs["train.epochs"][0]
    assert docs["data.train"][2] is None


def test_field_docs_defaults_round_trip():
    """The documented defaults are themselves a valid configuration."""
    values: dict = {}
    for key, (_type, _doc, default) in field_docs().items():
        section, _, name = key.rpartition(".")
        (values.setdefault(section, {}) if section else values)[name] = default
    values["data"]["train"] = "t.csv"
    assert config_from_dict(values) == load_config(None, ["data.train=t.csv"])


@pytest.mark.parametrize(
    "path",
    sorted(CONFIGS.rglob("*.yaml")) + sorted(CONFIGS.rglob("*.yml")) or [None],
    ids=lambda p: p.name if p else "none",
)
def test_shipped_configs_load(path):
    if path is None:
        pytest.skip("no YAML files under configs/")
    cfg = load_config(path, ["data.train=t.csv"])
    assert cfg.data.train == "t.csv"
    for key in ("train", "validation", "test"):  # the shipped files resolve from anywhere
        value = getattr(load_config(path).data, key)
        assert value is None or Path(value).is_relative_to(path.parent)


def test_paths_in_a_yaml_file_are_relative_to_it(tmp_path, monkeypatch):
    (tmp_path / "project" / "configs").mkdir(parents=True)
    (tmp_path / "project" / "models" / "mine").mkdir(parents=True)
    path = write_yaml(
        tmp_path / "project" / "configs" / "run.yaml",
        {
            "model": "../models/mine",
            "output_dir": "runs/a",
            "data": {"train": "../data/train.csv", "test": "/abs/test.csv", "dataset": "glue"},
        },
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(path, ["data.validation=dev.csv"])
    configs = tmp_path / "project" / "configs"
    assert cfg.data.train == str(configs / "../data/train.csv")
    assert cfg.model == str(configs / "../models/mine")
    assert cfg.data.test == "/abs/test.csv" and cfg.data.dataset == "glue"  # a Hub name
    assert cfg.data.validation == "dev.csv" and cfg.output_dir == "runs/a"  # where it runs
