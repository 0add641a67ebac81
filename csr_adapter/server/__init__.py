"""HTTP service for sparse embeddings and search (``csr-adapter serve``), extra ``serve``.

>>> from csr_adapter.server import create_app, ServeConfig
>>> app = create_app(CSREncoder.from_pretrained(), config=ServeConfig(api_key="secret"))
"""

from __future__ import annotations

from ..errors import require

require("fastapi", "serve")

from .app import create_app  # noqa: E402
from .config import ServeConfig  # noqa: E402

__all__ = ["ServeConfig", "create_app"]
