"""Language models loaded once from an exported folder: `FillMasker` (masked LM, top-k words
for each mask) and `Generator` (causal LM, continues a prompt)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from tunesmith.compute import hardware
from tunesmith.errors import UserError
from tunesmith.runfolder.layout import read_meta, resolve_model_dir


class FillMasker:
    """A masked LM loaded once: top-k {token, score} for each mask in a text, through
    transformers' fill-mask pipeline. `[MASK]` and `<mask>` both mean the tokenizer's own mask."""

    def __init__(self, model_path: str | Path, precision: str = "auto") -> None:
        from transformers import pipeline

        self.model_dir = resolve_model_dir(model_path)
        self.meta = _meta_of_task(self.model_dir, "masked-lm", "fill-mask")
        self.placement = hardware.inference_placement(
            precision, f"{self.model_dir}: a masked-lm model"
        )
        self.pipeline = pipeline(
            "fill-mask", model=str(self.model_dir), device=self.placement.device
        )
        self.mask = self.pipeline.tokenizer.mask_token
        if self.mask is None:
            raise UserError(f"{self.model_dir}: the tokenizer has no mask token; not a masked LM")

    def __call__(self, text: str, top_k: int = 5) -> list[list[dict[str, Any]]]:
        for alias in ("[MASK]", "<mask>"):
            text = text.replace(alias, self.mask)
        if self.mask not in text:
            raise UserError("the text has no mask; write [MASK] where a word should be filled in")
        with self.placement.autocast():
            found = self.pipeline(text, top_k=top_k)
        per_mask = found if text.count(self.mask) > 1 else [found]
        return [
            [{"token": c["token_str"], "score": float(c["score"])} for c in m] for m in per_mask
        ]


class Generator:
    """A causal LM loaded once; greedy at temperature 0, sampling above; `chat` wraps the prompt
    as a user turn with the tokenizer's chat template."""

    def __init__(self, model_path: str | Path, precision: str = "auto") -> None:
        from transformers import AutoModelForCausalLM

        self.model_dir = resolve_model_dir(model_path)
        self.meta = _meta_of_task(self.model_dir, "causal-lm", "generate")
        self.placement = hardware.inference_placement(
            precision, f"{self.model_dir}: a causal-lm model"
        )
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.model = self.placement.place(
            AutoModelForCausalLM.from_pretrained(self.model_dir).eval()
        )

    def __call__(
        self,
        prompt: str,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        chat: bool | None = None,
        seed: int | None = None,
    ) -> str:
        from transformers import set_seed

        tokenizer = self.tokenizer
        if chat is None:  # a model fine-tuned on chat messages is prompted the same way
            chat = bool(self.meta.get("chat"))
        if seed is not None:
            set_seed(seed)
        if chat:
            if not tokenizer.chat_template:
                raise UserError(f"{self.model_dir}: the tokenizer has no chat template; no chat")
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=not chat)
        inputs = inputs.to(self.placement.device)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k}
        with torch.inference_mode(), self.placement.autocast():
            output = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                **(sampling if temperature > 0 else {"do_sample": False}),
            )
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        return tokenizer.decode(new_tokens, skip_special_tokens=True)


def _meta_of_task(model_dir: Path, task: str, command: str) -> dict:
    """The folder's tunesmith.json, refusing a folder tunesmith trained for another task (a
    classifier would load with a fresh, random language-model head). Other folders are taken as
    they are."""
    meta = read_meta(model_dir)
    if meta.get("task", task) != task:
        raise UserError(f"{model_dir}: a {meta['task']} model; {command} needs a {task} model")
    return meta
