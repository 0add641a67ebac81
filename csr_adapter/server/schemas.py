"""Request and response bodies (pydantic), shaped like text-embeddings-inference's where TEI has them.

Unknown fields are ignored, so TEI clients that send ``truncate`` or ``truncation_direction`` work
unchanged (inputs are always truncated to the model's ``max_seq_length``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator

from ..filters import check_filter


def check_unicode(value: Any) -> Any:
    """``value`` if every string in it (dict keys too) encodes as UTF-8, else :class:`ValueError`.

    A lone surrogate (``"\\ud800"`` in JSON) fails only its own request (422), never a shared micro-batch.
    """
    items = value.items() if isinstance(value, dict) else value if isinstance(value, list) else [value]
    for item in items:
        for part in item if isinstance(value, dict) else [item]:
            if isinstance(part, list):
                check_unicode(part)
            elif isinstance(part, str):
                try:
                    part.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise ValueError(f"not valid Unicode (lone surrogate at character {exc.start})") from None
    return value


Inputs = Annotated[
    StrictStr | list[StrictStr],
    Field(description="One text or a list of texts (non-empty).", examples=["What is a sparse embedding?"]),
]
PositiveInt = Annotated[StrictInt, Field(ge=1)]
PromptName = Literal["query", "document"]
FilterValue = StrictStr | StrictInt | StrictFloat | StrictBool | list[StrictStr | StrictInt | StrictFloat | StrictBool]


class _Request(BaseModel):
    inputs: Inputs
    prompt_name: PromptName | None = Field(
        None, description="Prepend the model's query or document prefix (none when omitted).")
    truncate: StrictBool | None = Field(
        None, description="Accepted for TEI compatibility; inputs are always truncated to max_seq_length.")

    _unicode = field_validator("inputs")(check_unicode)


class EmbedSparseRequest(_Request):
    """``POST /embed_sparse``."""

    k: PositiveInt | None = Field(None, description="Active latents per code (default: the model's k; at most h).")


class EmbedRequest(_Request):
    """``POST /embed``."""

    normalize: StrictBool = Field(True, description="L2-normalise the vectors.")


class SparseValue(BaseModel):
    """One non-zero entry of a sparse embedding (TEI's shape)."""

    index: int
    value: float


class SearchRequest(BaseModel):
    """``POST /search``: one text query against an ingested collection."""

    query: StrictStr = Field(..., description="The query text (non-empty).", examples=["vitamin D and fractures"])
    collection: StrictStr | None = Field(None, description="Collection name (default: the first one served).")
    top_k: PositiveInt = Field(10, description="Number of hits to return.")
    filter: dict[str, FilterValue] | None = Field(
        None, description="Payload equality filter: {field: value}; a list value matches any of its items. Keys: "
                          "dotted parts of letters, digits, '_' or '-'; values: strings, 64-bit integers, booleans.")
    k: PositiveInt | None = Field(None, description="Active latents for the query code (default: the collection's).")

    _unicode = field_validator("query", "collection", "filter")(check_unicode)
    _filter = field_validator("filter")(check_filter)


class SearchHitModel(BaseModel):
    id: str
    score: float
    payload: dict[str, Any]
    served_by: str = Field(..., description="Which path produced the hit: sparse, dense or rerank.")


class SearchResponse(BaseModel):
    collection: str
    reason: str = Field(..., description="Why the hits were served that way (sparse, few_hits, empty_code, ...).")
    hits: list[SearchHitModel]


class ErrorResponse(BaseModel):
    """Every error: a one-line message and a machine-readable type (no tracebacks)."""

    error: str
    error_type: str
    detail: list[dict[str, Any]] | None = None


class HealthResponse(BaseModel):
    status: Literal["ok"]


class InfoResponse(BaseModel):
    model: str
    model_id: str
    backbone: str
    d: int
    h: int
    k: int
    max_seq_length: int
    device: str
    runtime: str = "torch"
    collections: list[str]
    limits: dict[str, Any]
    batching: dict[str, Any]
    version: str
