"""Request and response bodies of the HTTP API (CONTRACT section 4), in one place.

Request bodies are validated by FastAPI (a wrong JSON type is a 422 naming the field; unknown
keys are errors). Feature values are typed later, against the model's schema
(`serving.batcher`). Responses are written as plain JSON for speed; the response models here
document them in the OpenAPI page.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RankRequest(_Body):
    user_id: StrictStr = Field(min_length=1, max_length=256)
    item_ids: list[StrictStr] = Field(min_length=1)
    context: dict[str, Any] | None = None
    model: StrictStr | None = None
    experiment: StrictStr | None = None
    policy: StrictStr | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="ranking policy that fuses the scores (a policies-file name or a model "
        "output); overrides the experiment variant's",
    )
    top_k: StrictInt | None = Field(
        default=None,
        ge=1,
        description="return only the k best items by the policy's score, best first",
    )


class Missing(BaseModel):
    user: bool
    items: list[str]
    context: list[str] = Field(description="context features the request left out (defaulted)")


class RankResponse(BaseModel):
    request_id: str
    model: str
    version: str
    variant: str | None = Field(description="the experiment variant; null when `model` was given")
    experiment: str | None = Field(
        default=None, description="the experiment that assigned the variant (an extension)"
    )
    policy: str | None = Field(
        default=None, description="the ranking policy whose `score` each row carries, if any"
    )
    scores: list[dict[str, str | float]] = Field(
        description='one entry per item_ids entry, in order: {"item_id": ..., TASK: score}, plus '
        '"score" (the fused value) with a policy; with top_k the k best by score, best first'
    )
    missing: Missing
    degraded: bool


class PredictRequest(_Body):
    """TF Serving's REST row format."""

    instances: list[dict[str, Any]] = Field(min_length=1)
    signature_name: StrictStr | None = None


class PredictResponse(BaseModel):
    predictions: list[dict[str, float]]


class VersionStatusBody(BaseModel):
    version: str
    state: str
    status: dict[str, str]


class ModelStatusResponse(BaseModel):
    """TF Serving's `GET /v1/models/{name}` answer."""

    model_version_status: list[VersionStatusBody]


class ModelSummary(BaseModel):
    name: str
    version: str
    state: str
    pinned: int | None
    outputs: list[str]
    created: str | None
    path: str


class ModelsResponse(BaseModel):
    models: list[ModelSummary]


class PinRequest(_Body):
    version: int = Field(ge=1)


class ReadyResponse(BaseModel):
    ready: bool
    models: dict[str, str]
    store: str
    degraded: bool
