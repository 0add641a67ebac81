"""The broad training sets meant for a general-purpose head: licences stated, no evaluation text inside."""

from __future__ import annotations

import pytest
from conftest import SHARED_DATA

from csr_adapter.training.broad import BROAD_SETS, EVAL_SETS, broad_texts, eval_texts, text_hash

SHIPPABLE = ("permissive", "public domain", "CC BY", "GFDL")


def test_every_broad_set_states_a_shippable_licence():
    names = [s.name for s in BROAD_SETS]
    assert len(names) == len(set(names))
    for spec in BROAD_SETS:
        assert any(word in spec.licence for word in SHIPPABLE), spec
        assert "GPL" not in spec.licence.replace("GFDL", "")  # GCIDE (GPL-2+) stays out
    assert not {"gcide", "20newsgroups", *EVAL_SETS} & {s.path.split("/")[0] for s in BROAD_SETS}
    with pytest.raises(ValueError, match="unknown training sets"):
        broad_texts(SHARED_DATA, ["gcide"])


def test_no_evaluation_text_is_in_the_broad_sets():
    seen = {text_hash(t) for texts in broad_texts(SHARED_DATA).values() for t in texts}
    assert len(seen) > 200_000
    for name in EVAL_SETS:
        texts = eval_texts(SHARED_DATA, name)
        overlap = [t for t in texts if len(t.split()) >= 8 and text_hash(t) in seen]
        assert not overlap, f"{name}: {len(overlap)} texts also in the training data, e.g. {overlap[0][:80]!r}"
