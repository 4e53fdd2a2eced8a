"""Typed configuration: YAML plus dotted `key=value` overrides, validated once at the edge.

Every field is documented by the comment above it, a sentence or a few; `tunesmith train
--help-config` prints them and docs/reference/config.md lists them. Nothing inside tunesmith
re-checks these values: once `load_config` returns, the config is trusted. The flow: `schema`
(the fields) -> `validate` (values to a checked Config) -> `load` (YAML files and overrides in,
YAML out). Torch-free: the CLI reads the config before it imports torch.
"""

from tunesmith.config.load import (
    check_files,
    config_to_dict,
    load_config,
    merge,
    parse_overrides,
    save_config,
)
from tunesmith.config.schema import (
    INFERENCE_PRECISIONS,
    LANGUAGE_MODEL_TASKS,
    METHODS,
    PRECISIONS,
    TASKS,
    TRUNCATIONS,
    CheckpointConfig,
    Config,
    DataConfig,
    FewShotConfig,
    LanguageModelConfig,
    LoraConfig,
    TrainConfig,
    field_docs,
)
from tunesmith.config.validate import config_from_dict

__all__ = [
    "INFERENCE_PRECISIONS",
    "LANGUAGE_MODEL_TASKS",
    "METHODS",
    "PRECISIONS",
    "TASKS",
    "TRUNCATIONS",
    "CheckpointConfig",
    "Config",
    "DataConfig",
    "FewShotConfig",
    "LanguageModelConfig",
    "LoraConfig",
    "TrainConfig",
    "check_files",
    "config_from_dict",
    "config_to_dict",
    "field_docs",
    "load_config",
    "merge",
    "parse_overrides",
    "save_config",
]
