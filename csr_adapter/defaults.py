"""Defaults shared by the library, the CLI, the server and training (one source; no heavy imports)."""

from __future__ import annotations

DEFAULT_RRF_K = 60  # the RRF paper's constant; qdrant-client's own default (2) lets one list's outlier win
