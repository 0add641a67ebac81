"""Exception types. Every user-facing failure is one of these, with a one-line message."""

from __future__ import annotations


class CSRAdapterError(Exception):
    """Base class for csr-adapter errors that the CLI prints as one line."""


class ModelLoadError(CSRAdapterError):
    """A model directory is missing, corrupt, mis-shaped, or names an unknown backbone."""


class TrainConfigError(CSRAdapterError):
    """Training settings that cannot work (checked before any training starts)."""


class DeviceError(CSRAdapterError, ValueError):
    """The requested device is not available here (``device='cuda'`` on a machine without CUDA)."""


class MissingExtraError(CSRAdapterError, ImportError):
    """An optional dependency is not installed."""


def require(module: str, extra: str):
    """Import ``module`` or raise :class:`MissingExtraError` with the pip hint for ``extra``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{module} is not installed: pip install 'csr-adapter[{extra}]'"
        ) from exc
