"""Where a collection's own model lives: a content-addressed folder of model directories.

A collection records the id of the model that encoded it (:class:`~csr_adapter.integrations.base.CollectionMeta`);
adapted models are saved as ``<root>/<model_id>/`` (config.json + head.safetensors + card), so opening a
collection finds its model from that id alone. Roots, searched in order:

- ``<--path>/.models`` for an embedded store given with ``--path`` (the store folder is self-contained);
- ``$CSR_ADAPTER_HOME/models`` (default ``./.csr-adapter/models``): the default embedded store and every
  server collection (keyed by the model id the server collection's metadata records).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import CSRAdapterError, ModelLoadError


class ModelNotFoundError(CSRAdapterError):
    """A collection's model is not stored locally."""


def home_models() -> Path:
    return Path(os.environ.get("CSR_ADAPTER_HOME") or ".csr-adapter") / "models"


def model_roots(path: str | os.PathLike | None) -> list[Path]:
    """Folders searched for a collection's model (see the module docstring)."""
    roots = [Path(path) / ".models"] if path is not None else []
    return roots + [home_models()]


def find_model(model_id: str, path: str | os.PathLike | None = None) -> Path | None:
    for root in model_roots(path):
        if (root / model_id / "config.json").is_file():
            return root / model_id
    return None


def save_model(encoder, path: str | os.PathLike | None = None) -> Path:
    """Save ``encoder`` as ``<first root>/<model_id>`` (atomic: written beside, then renamed)."""
    root = model_roots(path)[0]
    target = root / encoder.model_id
    if (target / "config.json").is_file():
        return target
    tmp = root / f".{encoder.model_id}.tmp-{os.getpid()}"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        encoder.save_pretrained(tmp)
        if (target / "config.json").is_file():  # another process won the race
            shutil.rmtree(tmp)
        else:
            if target.exists():
                shutil.rmtree(target)  # a half-written folder from a killed run
            tmp.replace(target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CSRAdapterError(f"{root}: cannot store the collection's model ({exc.strerror or exc})") from None
    return target


def load_collection_model(model_id: str, path: str | os.PathLike | None, collection: str, device: str = "auto",
                          share=None, runtime: str | None = None):
    """The encoder a collection was built with: the shipped default, or its stored model.

    ``share``: an encoder already loaded; its backbone is reused when the stored model names the same one
    (an adapted head over the stock backbone), and it is returned as is when it *is* the model.
    ``runtime``: the backbone's runtime (``None``: ``share``'s, else torch).
    """
    from .encoder import CSREncoder

    if share is not None and share.model_id == model_id:
        return share
    where = find_model(model_id, path)
    if where is None:
        default = CSREncoder.from_pretrained(device=device, runtime=runtime)
        if default.model_id == model_id:
            return default
        looked = ", ".join(str(r) for r in model_roots(path))
        raise ModelNotFoundError(f"collection {collection!r} was built with model {model_id}, which is not stored "
                                 f"locally (looked in {looked}): pass model=DIR")
    try:
        enc = (CSREncoder.from_pretrained(where, device, runtime=runtime) if share is None else
               CSREncoder.from_pretrained(where, str(share.device), backbone=share.backbone, runtime=runtime))
    except ModelLoadError as exc:
        raise ModelNotFoundError(f"collection {collection!r}: its stored model is unusable ({exc}): pass model=DIR "
                                 "or re-ingest with recreate=True") from None
    if enc.model_id != model_id:
        raise ModelNotFoundError(f"collection {collection!r}: stored model {where} has id {enc.model_id}, expected "
                                 f"{model_id} (corrupt?): pass model=DIR or re-ingest with recreate=True")
    return enc



def copy_model(source: str | os.PathLike, model_id: str, root: str | os.PathLike) -> Path:
    """Store the model directory ``source`` as ``<root>/<model_id>`` (atomic; kept when already there)."""
    root = Path(root)
    target = root / model_id
    if (target / "config.json").is_file():
        return target
    tmp = root / f".{model_id}.tmp-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(source, tmp)
        if target.exists():
            shutil.rmtree(target)  # a half-written folder from a killed run
        tmp.replace(target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CSRAdapterError(f"{root}: cannot store the collection's model ({exc.strerror or exc})") from None
    return target
