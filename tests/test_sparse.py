"""SparseEmbeddings: construction, invariants, conversions and scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from csr_adapter import SparseEmbedding, SparseEmbeddings


def _batch() -> SparseEmbeddings:
    dense = np.array([[0, 3, 0, 4, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, -0.0]], dtype=np.float32)
    return SparseEmbeddings.from_dense(dense)


def test_from_dense_drops_zeros_and_normalises() -> None:
    b = _batch()
    assert len(b) == 3 and b.dim == 5
    assert b.nnz.tolist() == [2, 0, 1]
    assert b[0].indices.tolist() == [1, 3]
    np.testing.assert_allclose(b[0].values, [0.6, 0.8], rtol=1e-6)
    assert len(b[1]) == 0
    assert b.indices.dtype == np.int32 and b.values.dtype == np.float32


def test_from_rows_sorts_and_merges_duplicates() -> None:
    b = SparseEmbeddings.from_rows([{"indices": [4, 1, 4], "values": [1.0, 2.0, 1.0]}], dim=5)
    assert b[0].indices.tolist() == [1, 4]
    assert b[0].values.tolist() == [2.0, 2.0]


def test_conversions_agree() -> None:
    b = _batch()
    dense = b.to_dense()
    np.testing.assert_allclose(b.to_scipy().toarray(), dense)
    np.testing.assert_allclose(b.to_torch().to_dense().numpy(), dense)
    rows = b.to_list()
    assert rows[0] == {"indices": [1, 3], "values": pytest.approx([0.6, 0.8])}
    assert rows[1] == {"indices": [], "values": []}
    again = SparseEmbeddings.from_dict(b.to_dict())
    np.testing.assert_allclose(again.to_dense(), dense)


def test_dot_and_cosine() -> None:
    a = SparseEmbeddings.from_dense(np.array([[1, 1, 0], [0, 0, 2]], dtype=np.float32), normalize=False)
    b = SparseEmbeddings.from_dense(np.array([[1, 0, 0], [0, 1, 1]], dtype=np.float32), normalize=False)
    np.testing.assert_allclose(a.dot(b), [[1, 1], [0, 2]])
    np.testing.assert_allclose(a.cosine(b), [[1 / np.sqrt(2), 0.5], [0, 1 / np.sqrt(2)]], rtol=1e-6)
    assert a[0].dot(b[1]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="dim mismatch"):
        a.dot(SparseEmbeddings.empty(4))


def test_slicing_concat_and_errors() -> None:
    b = _batch()
    assert b[-1].indices.tolist() == [0]
    assert len(b[1:]) == 2 and b[1:].nnz.tolist() == [0, 1]
    both = SparseEmbeddings.concat([b, b])
    assert len(both) == 6 and both.nnz.tolist() == [2, 0, 1, 2, 0, 1]
    with pytest.raises(IndexError):
        b[3]
    with pytest.raises(ValueError, match="indices must lie"):
        SparseEmbeddings.from_rows([{"indices": [7], "values": [1.0]}], dim=5)
    assert isinstance(b[0], SparseEmbedding) and b[0].to_dense().shape == (5,)
    assert torch.is_tensor(b.to_torch())


def test_from_topk_drops_non_positive_and_unkept_and_sorts_indices() -> None:
    values = np.array([[0.5, 0.3, -0.1], [0.9, 0.0, 0.2]], dtype=np.float32)
    indices = np.array([[7, 2, 4], [1, 3, 0]])
    keep = np.array([[True, True, True], [True, True, False]])
    b = SparseEmbeddings.from_topk(values, indices, dim=8, keep=keep, normalize=False)
    assert b[0].indices.tolist() == [2, 7] and b[0].values.tolist() == pytest.approx([0.3, 0.5])
    assert b[1].indices.tolist() == [1] and b[1].values.tolist() == pytest.approx([0.9])
