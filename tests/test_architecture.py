"""The package's shape: dependencies go one way, and the CLI's light paths stay light."""

from __future__ import annotations

import ast
from pathlib import Path

import tunesmith

PACKAGE = Path(tunesmith.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the tunesmith modules it imports, at the top or inside functions alike."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                # `from tunesmith import metrics` imports the submodule tunesmith.metrics
                targets = [f"{node.module}.{a.name}" for a in node.names]
                targets = [t if t in modules else node.module for t in targets]
            else:
                continue
            # The root package only re-exports the API; it is never what a module needs.
            edges |= {t for t in targets if t in modules and t not in ("tunesmith", name)}
        graph[name] = edges
    return graph


def test_no_import_cycle():
    graph = import_graph()
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            assert state.get(target) != "open", " -> ".join([*path, target])
            if target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert len(graph) > 20  # the walk saw the package


def test_inference_is_shared_not_owned_by_prediction():
    graph = import_graph()
    users = (
        "tunesmith.training.setup",
        "tunesmith.tasks.classification",
        "tunesmith.infer.predict",
    )
    for user in users:
        assert "tunesmith.compute.inference" in graph[user], user
    training = [m for m in graph if m.startswith("tunesmith.training")]
    for module in (*training, "tunesmith.tasks.classification"):
        assert "tunesmith.infer.predict" not in graph[module], module


def test_run_folder_layout_is_torch_free():
    source = (PACKAGE / "runfolder" / "layout.py").read_text(encoding="utf-8")
    assert "torch" not in {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module)])
    }


def test_both_task_classes_keep_the_task_contract():
    from tunesmith.config import LanguageModelConfig
    from tunesmith.data import Columns
    from tunesmith.tasks import LabelSpec, LanguageModeling, SequenceClassification, Task

    columns = Columns("text", None, "label")
    classifier = SequenceClassification(columns, LabelSpec("classification", ("a", "b")))
    assert isinstance(classifier, Task)
    assert isinstance(LanguageModeling("causal-lm", columns, LanguageModelConfig()), Task)


def test_modules_stay_small_enough_to_read_in_one_sitting():
    """A module over ~450 lines has usually grown a second job: split it by job instead."""
    lengths = {
        module_name(p): len(p.read_text(encoding="utf-8").splitlines())
        for p in PACKAGE.rglob("*.py")
    }
    assert {m: n for m, n in lengths.items() if n > 450} == {}
