"""Read-only backend views used by transfers: answers from one listing, local keys in front."""

from __future__ import annotations

from pathlib import Path

import pytest

from rrstore.backends import LocalBackend
from rrstore.backends.views import ListedView, OverlayView
from rrstore.errors import RRStoreError


def test_listed_view_answers_from_its_listing_and_keeps_prefetched_keys(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "store")
    backend.write("packs/a.idx", b"index")
    backend.write("packs/a.pack", b"0123456789")
    view = ListedView(backend, set(backend.list("")))
    backend.write("objects/ab/cd", b"written after the listing")

    assert view.exists("packs/a.pack") and not view.exists("objects/ab/cd")
    with pytest.raises(KeyError):
        view.read("objects/ab/cd")
    assert list(view.list("packs/")) == ["packs/a.idx", "packs/a.pack"]
    assert view.read_range("packs/a.pack", 2, 3) == b"234"

    view.prefetch(["packs/a.idx"], workers=2)
    backend.delete("packs/a.idx")
    assert view.read("packs/a.idx") == b"index"  # kept: read once per transfer
    with pytest.raises(RRStoreError):
        view.write("packs/b.idx", b"x")
    with pytest.raises(RRStoreError):
        view.delete("packs/a.pack")
    assert view.staging() == backend.staging()
    staged = backend.staging() / "staged.tmp"
    staged.write_bytes(b"a pack")
    with pytest.raises(RRStoreError):
        view.install("packs/b.pack", staged)
    assert staged.read_bytes() == b"a pack" and not backend.exists("packs/b.pack")


def test_overlay_view_reads_local_keys_first_then_the_remote_listing(tmp_path: Path) -> None:
    local, remote = LocalBackend(tmp_path / "local"), LocalBackend(tmp_path / "remote")
    local.write("objects/aa/1", b"local copy")
    remote.write("objects/aa/1", b"remote copy")
    remote.write("objects/bb/2", b"remote only")
    view = OverlayView(local, ListedView(remote, set(remote.list(""))))

    assert view.read("objects/aa/1") == b"local copy"
    assert view.read("objects/bb/2") == b"remote only"
    assert view.read_range("objects/bb/2", 7, 4) == b"only"
    assert list(view.list("objects/")) == ["objects/aa/1", "objects/bb/2"]
    assert view.exists("objects/bb/2") and not view.exists("objects/cc/3")
    with pytest.raises(KeyError):
        view.read("objects/cc/3")
