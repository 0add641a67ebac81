"""Request and response bodies (pydantic), shaped like text-embeddings-inference's where TEI has them,
and like OpenAI's for ``/v1/embeddings``. Unknown fields are ignored (TEI clients may send more).
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


TruncationDirection = Literal["right", "left", "Right", "Left"]


class _Request(BaseModel):
    inputs: Inputs
    prompt_name: PromptName | None = Field(
        None, description="Prepend the model's query or document prefix (none when omitted).")
    truncate: StrictBool | None = Field(
        None, description="Cut inputs longer than the model's max_input_length tokens (see /info). false: such "
                          "an input is refused with 413; omitted: the server's auto_truncate (/info).")
    truncation_direction: TruncationDirection = Field(
        "right", description="Which end of a too-long input is cut when truncating (TEI's Right/Left accepted).")

    _unicode = field_validator("inputs")(check_unicode)


class EmbedSparseRequest(_Request):
    """``POST /embed_sparse``."""

    k: PositiveInt | None = Field(None, description="Active latents per code (default: the model's k; at most h).")
    role: Literal["document", "query"] = Field(
        "document", description="'query': code the inputs as search queries, at the model's wider query_k "
                                "(see /info) when it has one, to score against document codes; default: "
                                "document codes. prompt_name only adds the prefix.")


Dimensions = Annotated[StrictInt | None, Field(
    ge=1, description="Length of the returned vectors: only the backbone's full d is served (the backbone "
                            "is not Matryoshka-trained); any other value is refused with 422.")]


class EmbedRequest(_Request):
    """``POST /embed``."""

    normalize: StrictBool = Field(True, description="L2-normalise the vectors (false: the pooled vectors as the "
                                                    "backbone computes them before its normalisation).")
    dimensions: Dimensions = None


class SparseValue(BaseModel):
    """One non-zero entry of a sparse embedding (TEI's shape)."""

    index: int
    value: float


class OpenAIEmbeddingsRequest(BaseModel):
    """``POST /v1/embeddings`` (OpenAI's request shape)."""

    input: Inputs
    model: StrictStr | None = Field(None, description="Accepted and echoed; the served model answers.")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="base64: each vector as little-endian float32 bytes, base64-encoded (as OpenAI).")
    dimensions: Dimensions = None
    user: StrictStr | None = Field(None, description="Accepted and ignored.")

    _unicode = field_validator("input")(check_unicode)


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingsResponse(BaseModel):
    object: Literal["list"]
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


class SearchRequest(BaseModel):
    """``POST /search``: one text query against an ingested collection."""

    query: StrictStr = Field(..., description="The query text (non-empty).", examples=["vitamin D and fractures"])
    collection: StrictStr | None = Field(None, description="Collection name (default: the first one served).")
    top_k: PositiveInt = Field(10, description="Number of hits to return.")
    filter: dict[str, FilterValue] | None = Field(
        None, description="Payload equality filter: {field: value}; a list value matches any of its items. Keys: "
                          "dotted parts of letters, digits, '_' or '-'; values: strings, 64-bit integers, booleans.")
    k: PositiveInt | None = Field(None, description="Active latents for the query code (default: the collection's).")
    mode: Literal["fused", "codes", "lexical", "dense", "hybrid"] | None = Field(
        None, description="fused: codes + BM25 (default where the collection has a lexical vector); codes, lexical, "
                          "dense or hybrid (codes + dense) alone.")

    _unicode = field_validator("query", "collection", "filter")(check_unicode)
    _filter = field_validator("filter")(check_filter)


class SearchHitModel(BaseModel):
    id: str
    score: float
    payload: dict[str, Any]
    served_by: str = Field(..., description="Which path produced the hit: sparse, fused, lexical, hybrid, dense or "
                                            "rerank.")


class SearchResponse(BaseModel):
    collection: str
    reason: str = Field(..., description="Why the hits were served that way (sparse, few_hits, empty_code, ...).")
    hits: list[SearchHitModel]


class ErrorResponse(BaseModel):
    """Every error (TEI's shape): a one-line message and a machine-readable type (no tracebacks)."""

    error: str
    error_type: str = Field(..., description="TEI's names (Validation, Empty, Overloaded, Unhealthy, Tokenizer, "
                                             "Backend) and ours in the same casing (Unauthorized, NotFound, ...).")
    detail: list[dict[str, Any]] | None = None


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class OpenAIErrorResponse(BaseModel):
    """Errors of ``/v1/`` routes: OpenAI's ``error`` object, and TEI's ``OpenAICompatErrorResponse`` fields."""

    error: OpenAIErrorDetail
    message: str
    code: int = Field(..., description="The HTTP status.")
    type: str = Field(..., description="As error_type: the key text-embeddings-inference's server uses.")
    error_type: str = Field(..., description="As type: the name text-embeddings-inference's OpenAPI uses.")


class HealthResponse(BaseModel):
    status: Literal["ok"]


class CSRInfo(BaseModel):
    """csr-adapter's own facts about the served model and server."""

    model: str
    model_id: str = Field(..., description="The CSR model's id (backbone, head and config hash).")
    backbone: str
    d: int
    h: int
    k: int
    query_k: int | None
    max_seq_length: int
    device: str
    runtime: str = "torch"
    collections: list[str]
    limits: dict[str, Any]
    batching: dict[str, Any]


class InfoResponse(BaseModel):
    """TEI's ``Info`` (the fields TEI clients read), plus ``csr_adapter`` with our own."""

    model_id: str
    model_sha: str | None
    model_dtype: str
    model_type: dict[str, Any]
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int | None
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int
    version: str
    sha: str | None
    docker_label: str | None
    csr_adapter: CSRInfo
