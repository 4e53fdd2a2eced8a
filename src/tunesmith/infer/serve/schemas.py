"""The JSON bodies of `tunesmith serve`: pydantic models of every request and response, which
validate a request (and fill the OpenAPI schema) before it reaches a model."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tunesmith.infer.serve.limits import MAX_INPUTS, MAX_NEW_TOKENS, MAX_TEXT_CHARS


class TextInput(BaseModel):
    # A misspelt key ("textpair") would otherwise be dropped and the text predicted without it.
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    text_pair: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        description="the second text of a pair, for a model trained on pairs",
    )

    @field_validator("text", "text_pair")
    @classmethod
    def not_blank(cls, value: str | None) -> str | None:
        # Predictor refuses blank texts; caught here, it fails one request, not a merged batch.
        if value is not None and not value.strip():
            raise ValueError("is blank")
        return value


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: list[TextInput] = Field(
        min_length=1,
        max_length=MAX_INPUTS,
        description=f"up to {MAX_INPUTS} inputs; a single input object is accepted too, and so "
        f'is a body that is one input ({{"text": ...}})',
    )

    @model_validator(mode="before")
    @classmethod
    def bare_input(cls, body: Any) -> Any:
        # {"text": ...} alone is the most natural request for one text.
        if isinstance(body, dict) and "inputs" not in body and "text" in body:
            return {"inputs": [body]}
        return body

    @field_validator("inputs", mode="before")
    @classmethod
    def one_or_many(cls, value: Any) -> Any:
        # Wrapped before validation rather than typed as a union, so an error gives one reason.
        return [value] if isinstance(value, dict) else value


class Prediction(BaseModel):
    label: str | float | None = Field(
        default=None, description="the class name (the value, for a regression model)"
    )
    labels: list[str] | None = Field(
        default=None, description="multi-label models: every label at or above its threshold"
    )
    scores: dict[str, float] = Field(description="every class's probability ('score' alone)")


class PredictResponse(BaseModel):
    predictions: list[Prediction] = Field(description="one per input, in input order")


class FieldError(BaseModel):
    loc: list[str] = Field(description="where in the body, e.g. ['inputs', '0', 'text']")
    msg: str


class Problem(BaseModel):
    detail: str = Field(description="what is wrong, in one line")
    errors: list[FieldError] | None = Field(default=None, description="each invalid field (422)")


class FillMaskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(
        min_length=1, max_length=MAX_TEXT_CHARS, description="text with one or more [MASK]"
    )
    top_k: int = Field(default=5, ge=1, le=100, description="candidates per mask")


class Candidate(BaseModel):
    token: str
    score: float


class FillMaskResponse(BaseModel):
    masks: list[list[Candidate]] = Field(description="per mask, in text order: the top-k")


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    max_new_tokens: int = Field(default=64, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(default=0.0, ge=0.0, le=5.0, description="0 is greedy")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, description="sample among the k likeliest; 0: all")
    chat: bool | None = Field(
        default=None, description="wrap the prompt as a user chat turn; unset: as trained"
    )
    seed: int | None = Field(default=None, description="for reproducible sampling")


class GenerateResponse(BaseModel):
    text: str = Field(description="the continuation, without the prompt")


class Health(BaseModel):
    status: Literal["ok"]


class Info(BaseModel):
    task: Literal["classification", "multi_label", "regression", "masked-lm", "causal-lm"]
    labels: list[str] = Field(description="class names in id order (empty for regression)")
    model_path: str
    device: str = Field(description="where the model runs: cpu or cuda")
    precision: str = Field(description="number format of the forward pass, and why")
    max_length: int = Field(description="tokens per text (or pair) before truncation")
    batching: bool
    max_batch_size: int = Field(description="most texts merged into one model call")
    max_wait_ms: float = Field(description="how long a batch waits for more requests")
    max_inputs: int
    max_text_chars: int
    max_body_bytes: int
