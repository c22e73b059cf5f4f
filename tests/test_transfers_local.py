"""local:// and file:// transfers, checksums, URL checks, progress."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from backends.transfers import TransferContext, transfer_for
from backends.transfers.checksum import file_digest
from edgeceleryapp.errors import PermanentError, UnsafePath
from edgeceleryapp.settings import TransferSettings


def ctx(root: Path, **settings) -> TransferContext:
    return TransferContext(roots=[root], settings=TransferSettings(**settings), token="t1")


def test_adler32_is_printed_as_atlas_prints_it(tmp_path):
    data = b"edgecelery" * 1000
    (tmp_path / "f").write_bytes(data)
    assert file_digest(tmp_path / "f", "adler32") == f"{zlib.adler32(data):08x}"
    assert len(file_digest(tmp_path / "f", "sha256")) == 64


@pytest.mark.parametrize("algorithm", ["sha256", "adler32"])
def test_tree_copies_verified_and_a_rerun_changes_nothing(tmp_path, algorithm):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "a.dat").write_bytes(b"a" * 3000)
    (src / "sub" / "b.dat").write_bytes(b"b" * 10)
    transfer = transfer_for(f"local://{dst}", ctx(tmp_path, checksum=algorithm))
    transfer.upload(src, f"local://{dst}")
    assert (dst / "sub" / "b.dat").read_bytes() == b"b" * 10
    before = (dst / "a.dat").stat().st_mtime_ns, (dst / "a.dat").stat().st_ino
    transfer.upload(src, f"local://{dst}")
    assert ((dst / "a.dat").stat().st_mtime_ns, (dst / "a.dat").stat().st_ino) == before


def test_a_leftover_from_a_killed_run_is_replaced_not_left(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "big.dat").write_bytes(b"x" * 100_000)
    context = ctx(tmp_path)
    (dst / context.part_name("big.dat")).write_bytes(b"x" * 123)  # the killed run's part
    transfer_for(f"file://{dst}", context).upload(src, f"file://{dst}")
    assert sorted(p.name for p in dst.iterdir()) == ["big.dat"]
    assert (dst / "big.dat").stat().st_size == 100_000


def test_progress_is_reported_in_bytes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"z" * (3 << 20))
    seen: list[int] = []
    context = ctx(tmp_path)
    context.progress = seen.append
    transfer_for(f"local://{tmp_path / 'out'}", context).upload(src, f"local://{tmp_path / 'out'}")
    assert seen[-1] == 3 << 20 and seen == sorted(seen)


def test_schemes_and_hosts_are_restricted_per_site(tmp_path):
    with pytest.raises(PermanentError, match="scheme 'file' is not allowed"):
        transfer_for("file:///x", ctx(tmp_path, schemes=["local"]))
    with pytest.raises(PermanentError, match=r"host 'evil\.example' is not allowed"):
        transfer_for("scp://evil.example/x", ctx(tmp_path, hosts=["dtn.example"]))
    with pytest.raises(UnsafePath):
        transfer_for("scp://dtn.example/data/../../etc", ctx(tmp_path))


def test_local_urls_outside_the_roots_are_refused(tmp_path):
    transfer = transfer_for("local:///etc/passwd", ctx(tmp_path / "root"))
    with pytest.raises(UnsafePath):
        transfer.download("local:///etc/passwd", tmp_path / "in")
