"""Server settings: request limits, micro-batching, timeouts and auth, with defaults for a small CPU box."""

from __future__ import annotations

from dataclasses import asdict, dataclass

DEFAULT_HOSTS = ("127.0.0.1", "localhost", "[::1]")


@dataclass
class ServeConfig:
    """Everything ``create_app`` needs besides the encoder and the collections."""

    max_inputs: int = 256  # texts per request (413 above)
    max_chars: int = 20_000  # characters per text (413 above); the model truncates to max_seq_length anyway
    max_body_bytes: int = 4 * 1024 * 1024  # request body (413 above)
    max_top_k: int = 1000  # /search top_k (422 above)
    max_batch_size: int = 32  # texts per forward pass; 1 turns micro-batching off
    max_wait_ms: float = 5.0  # how long the oldest queued request may wait for company
    max_queue: int = 1024  # texts waiting for the model (429 above)
    timeout_s: float = 30.0  # wait for a result before answering 429
    encode_batch_size: int = 32  # backbone batch size inside one micro-batch
    api_key: str | None = None  # Bearer token for every route but /health
    allowed_hosts: tuple[str, ...] = DEFAULT_HOSTS  # Host header values served (421 otherwise); "*" = any
    body_timeout_s: float = 10.0  # the whole request body must arrive within this (408 otherwise)
    header_timeout_s: float = 10.0  # a request head must arrive within this (408 and close; see server/http.py)
    keep_alive_s: float = 5.0  # an idle kept-alive connection is closed after this
    max_connections: int = 256  # open connections; one more gets 503 and is closed
    source_root: str | None = None  # /search shows source/file relative to this (default: the working dir)
    warmup: bool = True  # one forward pass at start-up, so the first request is not slow
    auto_truncate: bool = True  # a request without "truncate" gets its too-long inputs cut (False: 413, TEI's default)

    def __post_init__(self) -> None:
        for name in ("max_inputs", "max_chars", "max_body_bytes", "max_top_k", "max_batch_size", "max_queue",
                     "encode_batch_size", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if (self.max_wait_ms < 0 or self.timeout_s <= 0 or self.body_timeout_s <= 0 or self.header_timeout_s <= 0
                or self.keep_alive_s <= 0):
            raise ValueError("max_wait_ms must be >= 0; timeout_s, body_timeout_s, header_timeout_s and keep_alive_s "
                             "> 0")
        self.allowed_hosts = tuple(self.allowed_hosts)
        if not self.allowed_hosts or any(not h.strip() for h in self.allowed_hosts):
            raise ValueError("allowed_hosts must name at least one host, none empty")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key must not be empty")

    def limits(self) -> dict:
        return {"max_inputs": self.max_inputs, "max_chars": self.max_chars, "max_body_bytes": self.max_body_bytes,
                "max_top_k": self.max_top_k, "timeout_s": self.timeout_s, "body_timeout_s": self.body_timeout_s,
                "header_timeout_s": self.header_timeout_s, "keep_alive_s": self.keep_alive_s,
                "max_connections": self.max_connections,
                "auto_truncate": self.auto_truncate}

    def to_dict(self) -> dict:
        data = asdict(self)
        data["api_key"] = self.api_key is not None
        return data
