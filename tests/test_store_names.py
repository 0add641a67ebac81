"""A store's own names: rebuild temporaries, ``.models`` and derived paths never meet a user's collection
(real embedded Qdrant Edge, real FAISS fallback, real backbone)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from csr_adapter.cli import cli
from csr_adapter.collection import Collection
from csr_adapter.corpus import read_corpus
from csr_adapter.integrations.base import BackendError, check_collection_name, temporary_name
from csr_adapter.integrations.fallback import open_fallback
from csr_adapter.training.adapt import AdaptConfig

STEPS = AdaptConfig(min_steps=8, max_steps=8)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def docs(tmp_path_factory, scifact_slice):
    """8 real SciFact abstracts (first 400 characters), one file each."""
    folder = tmp_path_factory.mktemp("names") / "docs"
    folder.mkdir()
    for doc_id, text in list(scifact_slice["docs"].items())[:8]:
        (folder / f"{doc_id}.txt").write_text(text[:400], encoding="utf-8")
    return folder


def ingest(name, docs, store, encoder, **kwargs):
    col = Collection(name, path=store, encoder=encoder, echo=lambda m: None)
    return col.ingest(read_corpus(docs), progress=False, **{"adapt": False, **kwargs})


def test_opening_or_rebuilding_a_collection_leaves_its_namesakes_with_old_and_next_suffixes(docs, tmp_path,
                                                                                             encoder):
    """Issue 29.1: ``notes.old`` and ``notes.next`` are a user's collections like any other: opening, searching
    and re-adapting ``notes`` (a rebuild beside, then a switch, fallbacks too) leaves them and their points alone."""
    store = tmp_path / "store"
    for name in ("notes.old", "notes.next", "notes"):
        assert ingest(name, docs, store, encoder, with_fallback=True).points == 8
    Collection("notes", path=store, encoder=encoder).search("cells")
    assert run("search", "cells", "--collection", "notes", "--path", store, "--json").exit_code == 0
    rebuilt = ingest("notes", docs, store, encoder, adapt=True, adapt_config=STEPS)
    assert rebuilt.adapt["adapted"] and rebuilt.points == 8
    for name in ("notes.old", "notes.next", "notes"):
        assert Collection(name, path=store, encoder=encoder).count() == 8, name
        fallback = open_fallback(name, str(store))
        assert fallback.count() == 8, name
        fallback.close()
    assert sorted(p.name for p in store.iterdir() if not p.name.startswith(".")) == [
        "notes", "notes.faiss", "notes.next", "notes.next.faiss", "notes.old", "notes.old.faiss"]


def test_rebuild_temporaries_are_reserved_and_only_marked_leftovers_are_deleted(docs, tmp_path, encoder):
    """The temporaries' names start with '.', which no user name may; a folder at a temporary's place that our
    code did not retire (no marker) is left alone, not deleted."""
    old = temporary_name("notes", "old")
    assert check_collection_name(old) == old  # the code that makes it may open it
    result = run("search", "cells", "--collection", old, "--path", tmp_path)
    assert result.exit_code != 0 and "reserved" in result.output
    assert len(result.output.strip().splitlines()) == 1
    store = tmp_path / "store"
    ingest("notes", docs, store, encoder)
    stranger = store / old
    stranger.mkdir()
    (stranger / "keep.txt").write_text("not ours")
    Collection("notes", path=store, encoder=encoder).search("cells")
    assert (stranger / "keep.txt").read_text() == "not ours"


def test_reserved_names_are_a_one_line_error_and_delete_nothing(docs, tmp_path, encoder):
    """Issue 29.4: ``--collection .models --recreate`` deleted the store's adapted models; any name starting
    with '.' is the store's own and is refused before anything is touched."""
    from csr_adapter.model_store import save_model

    store = tmp_path / "store"
    saved = save_model(encoder, store)
    before = sorted(p.name for p in saved.iterdir())
    for name in (".models", ".hidden"):
        result = run("ingest", docs, "--path", store, "--collection", name, "--recreate", "--no-adapt")
        assert result.exit_code == 1 and result.output.startswith(f"Error: collection name '{name}' is reserved")
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert sorted(p.name for p in saved.iterdir()) == before
    assert sorted(p.name for p in store.iterdir()) == [".models"]
    with pytest.raises(BackendError, match="reserved"):
        Collection(".models", path=store)


@pytest.mark.parametrize("backend", ["qdrant", "faiss"])
def test_names_of_derived_paths_are_refused_and_the_fallback_they_name_survives(docs, tmp_path, encoder, backend):
    """Issue 29.5: ``--collection notes.faiss --recreate`` (FAISS backend: the same folder) replaced the FAISS
    fallback of ``notes``; names ending in a derived path's suffix are a one-line error that touches nothing."""
    store = tmp_path / "store"
    ingest("notes", docs, store, encoder, with_fallback=True)
    fallback = store / "notes.faiss"
    before = {p.name: p.stat().st_mtime_ns for p in fallback.iterdir()}
    for name in ("notes.faiss", "Notes.FAISS", "notes.db"):
        result = run("ingest", docs, "--path", store, "--collection", name, "--recreate", "--no-adapt",
                     "--backend", backend)
        assert result.exit_code == 1 and result.output.startswith(f"Error: collection name '{name}' is reserved")
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert {p.name: p.stat().st_mtime_ns for p in fallback.iterdir()} == before
    hits = Collection("notes", path=store).search(docs.joinpath(sorted(p.name for p in docs.iterdir())[0])
                                                   .read_text()[:200], top_k=1)
    assert hits and hits[0].payload["source"].startswith(str(docs))


def test_recreate_without_fallback_drops_the_old_fallback(docs, tmp_path, encoder):
    """Issue 29.9: ``--recreate`` without ``--with-fallback`` left the old FAISS fallback, whose deleted
    documents came back as dense hits. The fallback goes with the collection it belonged to."""
    store = tmp_path / "store"
    ingest("notes", docs, store, encoder, with_fallback=True)
    assert (store / "notes.faiss").exists()
    few = tmp_path / "few"
    few.mkdir()
    kept = sorted(docs.iterdir())[:2]
    for f in kept:
        (few / f.name).write_text(f.read_text())
    report = ingest("notes", few, store, encoder, recreate=True)
    assert report.points == 2 and not (store / "notes.faiss").exists()
    gone = sorted(docs.iterdir())[5].read_text()[:200]
    hits = Collection("notes", path=store).search(gone, top_k=5)
    assert {h.payload["source"] for h in hits} <= {str(few / f.name) for f in kept}
    assert all(h.served_by != "dense" for h in hits)
