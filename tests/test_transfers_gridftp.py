"""gsiftp:// and ftp:// against a real globus-gridftp-server on 127.0.0.1, installed from
Debian and started by scripts/gridftp.sh (GSI with the script's throw-away CA; ftp:// is the
same server's anonymous access). The server runs as root and the test's DN maps to root, so
the server's side of every transfer is a temporary directory of the test, named by its
absolute path."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import backends.transfers.gridftp as gridftp
from backends.transfers import TransferContext, transfer_for
from edgeceleryapp.devstack import free_port
from edgeceleryapp.errors import PermanentError, TransientError, UnsafePath
from edgeceleryapp.settings import TransferSettings

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gridftp.sh"


@dataclass
class Server:
    port: int
    state: Path
    proxy: Path

    def url(self, path: Path, scheme: str = "gsiftp") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def transfers_of(self, path: Path) -> int:
        """Files the server sent or stored under ``path`` (its log: one line per file)."""
        lines = (self.state / "log" / "transfer.log").read_text().splitlines()
        return sum(
            f"FILE={path}/" in line and (" TYPE=RETR " in line or " TYPE=STOR " in line)
            for line in lines
        )


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    if os.geteuid() != 0:
        pytest.skip("scripts/gridftp.sh installs packages and starts a daemon: needs root")
    done = subprocess.run(
        [str(SCRIPT), "start"], capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("export ")
    env = dict(item.split("=", 1) for item in last.split()[1:])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("X509_CERT_DIR", env["X509_CERT_DIR"])
        # The proxy comes from the transfer settings only, never from the environment.
        mp.delenv("X509_USER_PROXY", raising=False)
        yield Server(
            int(env["EDGECELERY_GRIDFTP_PORT"]),
            Path(env["EDGECELERY_GRIDFTP_DIR"]),
            Path(env["X509_USER_PROXY"]),
        )


def ctx(root: Path, server: Server, **settings) -> TransferContext:
    settings.setdefault("x509_proxy", server.proxy)
    settings.setdefault("hosts", ["127.0.0.1"])
    return TransferContext(roots=[root], settings=TransferSettings(**settings), token="t1")


def make_tree(root: Path) -> Path:
    for i in range(300):
        sub = root / f"d{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}.txt").write_text(f"file {i}\n" * (i % 7))
    (root / "big file.dat").write_bytes(os.urandom(4 << 20))
    return root


def same_tree(a: Path, b: Path) -> None:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def identities(root: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.parametrize("algorithm", ["sha256", "adler32"])
def test_a_file_both_directions(tmp_path, server, algorithm):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "one.dat").write_bytes(os.urandom(300_000))
    remote = tmp_path / "remote"
    context = ctx(tmp_path, server, checksum=algorithm)
    transfer_for(server.url(remote), context).upload(
        tmp_path / "src" / "one.dat", server.url(remote)
    )
    assert (remote / "one.dat").read_bytes() == (tmp_path / "src" / "one.dat").read_bytes()
    url = server.url(remote / "one.dat")
    transfer_for(url, context).download(url, tmp_path / "back")
    assert sorted(os.listdir(tmp_path / "back")) == ["one.dat"]
    assert (tmp_path / "back" / "one.dat").read_bytes() == (remote / "one.dat").read_bytes()


@pytest.mark.parametrize("algorithm", ["sha256", "adler32"])
def test_a_tree_both_directions_and_a_rerun_moves_nothing(tmp_path, server, algorithm):
    src, remote, back = make_tree(tmp_path / "src"), tmp_path / "remote", tmp_path / "back"
    context = ctx(tmp_path, server, checksum=algorithm)
    seen: list[int] = []
    context.progress = seen.append
    moved = server.transfers_of(remote)  # the log outlives --basetemp's directories
    transfer_for(server.url(remote), context).upload(src, server.url(remote))
    same_tree(src, remote)
    assert seen[-1] == sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    assert server.transfers_of(remote) == moved + 301
    before = identities(remote)
    transfer_for(server.url(remote), context).upload(src, server.url(remote))
    assert identities(remote) == before and server.transfers_of(remote) == moved + 301

    transfer_for(server.url(remote), context).download(server.url(remote) + "/", back)
    same_tree(src, back)
    assert server.transfers_of(remote) == moved + 602
    before = identities(back)
    transfer_for(server.url(remote), context).download(server.url(remote), back)
    assert identities(back) == before and server.transfers_of(remote) == moved + 602


def test_ftp_anonymous_file_and_tree_both_directions(tmp_path, server):
    # Anonymous ftp:// is mapped to `nobody`: its side lives in a directory nobody owns.
    pub = Path(tempfile.mkdtemp(prefix="edgecelery-ftp-"))
    try:
        nobody = pwd.getpwnam("nobody")
        os.chown(pub, nobody.pw_uid, nobody.pw_gid)
        pub.chmod(0o755)
        src = tmp_path / "src"
        for i in range(20):
            (src / "sub").mkdir(parents=True, exist_ok=True)
            (src / "sub" / f"f{i}").write_text(str(i) * i)
        (src / "top.bin").write_bytes(os.urandom(1 << 20))
        # No credentials at all.
        context = TransferContext([tmp_path], TransferSettings(hosts=["127.0.0.1"]), token="t1")
        url = server.url(pub / "tree", "ftp")
        transfer_for(url, context).upload(src, url)
        same_tree(src, pub / "tree")
        assert (pub / "tree" / "top.bin").stat().st_uid == nobody.pw_uid
        transfer_for(url, context).download(url, tmp_path / "back")
        same_tree(src, tmp_path / "back")
        one = server.url(pub / "tree" / "top.bin", "ftp")
        transfer_for(one, context).download(one, tmp_path / "one")
        assert (tmp_path / "one" / "top.bin").read_bytes() == (src / "top.bin").read_bytes()
        with pytest.raises(PermanentError, match="permission denied"):  # nobody's limits
            transfer_for(url, context).upload(src, server.url(tmp_path / "x", "ftp"))
    finally:
        shutil.rmtree(pub)


def test_a_leftover_part_from_a_killed_run_is_replaced(tmp_path, server):
    context = ctx(tmp_path, server)
    data = os.urandom(1 << 20)
    remote, local = tmp_path / "remote", tmp_path / "local"
    remote.mkdir()
    local.mkdir()
    (local / "big.dat").write_bytes(data)
    (remote / context.part_name("big.dat")).write_bytes(b"junk" * 500_000)  # longer
    transfer_for(server.url(remote), context).upload(local, server.url(remote))
    assert os.listdir(remote) == ["big.dat"] and (remote / "big.dat").read_bytes() == data

    back = tmp_path / "back"
    back.mkdir()
    (back / context.part_name("big.dat")).write_bytes(b"junk" * 500_000)
    transfer_for(server.url(remote), context).download(server.url(remote), back)
    assert os.listdir(back) == ["big.dat"] and (back / "big.dat").read_bytes() == data


def test_a_checksum_mismatch_is_transient_and_lands_nothing(tmp_path, server, monkeypatch):
    for side in ("remote", "local"):
        (tmp_path / side).mkdir()
        (tmp_path / side / "f.dat").write_bytes(b"x" * 1000)
    real = gridftp.file_digest
    # The downloaded part, and the local file an upload sends, seem to hash differently.
    monkeypatch.setattr(
        gridftp,
        "file_digest",
        lambda p, a: "1" * 8 if ".part-" in p.name or p.parent.name == "local" else real(p, a),
    )
    url = server.url(tmp_path / "remote" / "f.dat")
    with pytest.raises(TransientError, match="differs"):
        transfer_for(url, ctx(tmp_path, server)).download(url, tmp_path / "back")
    assert os.listdir(tmp_path / "back") == []
    url = server.url(tmp_path / "up")
    with pytest.raises(TransientError, match="differs"):
        transfer_for(url, ctx(tmp_path, server)).upload(tmp_path / "local", url)
    assert os.listdir(tmp_path / "up") == []  # the server's part was deleted, nothing landed


def test_a_missing_remote_path_is_permanent_and_named(tmp_path, server):
    url = server.url(tmp_path / "no-such-dir" / "x.dat")
    with pytest.raises(PermanentError, match=r"no-such-dir/x\.dat: no such file or directory"):
        transfer_for(url, ctx(tmp_path, server)).download(url, tmp_path / "back")


def test_connection_refused_is_transient(tmp_path, server):
    url = f"gsiftp://127.0.0.1:{free_port()}{tmp_path}/x"
    with pytest.raises(TransientError, match="Connection refused"):
        transfer_for(url, ctx(tmp_path, server)).download(url, tmp_path / "back")


def test_credentials_come_from_the_settings(tmp_path, server):
    # A self-signed certificate the server's CA did not issue: authentication is refused.
    cred = tmp_path / "stranger.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/O=elsewhere/CN=stranger", "-keyout", str(cred), "-out", str(cred)],
        check=True, capture_output=True,
    )  # fmt: skip
    cred.chmod(0o600)
    url = server.url(tmp_path)
    with pytest.raises(PermanentError, match="authentication refused"):
        transfer_for(url, ctx(tmp_path, server, x509_proxy=cred)).download(url, tmp_path / "b")
    with pytest.raises(PermanentError, match=r"x509_proxy: .* does not exist"):
        transfer_for(url, ctx(tmp_path, server, x509_proxy=tmp_path / "none")).download(
            url, tmp_path / "b"
        )
    with pytest.raises(PermanentError, match="no user or password in URLs"):
        transfer_for("gsiftp://u:p@127.0.0.1/x", ctx(tmp_path, server)).download(
            "gsiftp://u:p@127.0.0.1/x", tmp_path / "b"
        )


def test_parallel_streams_and_site_options_reach_the_server(tmp_path, server):
    settings = TransferSettings(gridftp_parallel=3, gridftp_options=["-tcp-bs", "1048576"])
    argv = gridftp.copy_argv(settings, Path("/l"))
    assert argv == ["globus-url-copy", "-cd", "-p", "3", "-tcp-bs", "1048576", "-f", "/l"]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "s.dat").write_bytes(os.urandom(2 << 20))
    remote = tmp_path / "remote"
    context = ctx(tmp_path, server, gridftp_parallel=3, gridftp_options=["-tcp-bs", "1048576"])
    transfer_for(server.url(remote), context).upload(tmp_path / "src", server.url(remote))
    log = (server.state / "log" / "transfer.log").read_text().splitlines()
    line = [x for x in log if f"FILE={remote}/" in x][-1]
    assert " STREAMS=3 " in line and " TYPE=STOR " in line


def plan_line(path: str) -> str:
    """One line of globus-url-copy's plan (``-do``) as the server's listing makes it."""
    return f'"gsiftp://127.0.0.1:1{path}" "file:///x{path}" 0,-1 size=1;mode=0644;'


def test_the_servers_listing_cannot_place_files_outside_the_destination():
    """Names from the listing are checked as SFTP's are, each decoded on its own; the plan
    globus-url-copy writes encodes '%' (%25), so a literal '%2e%2e%2f' stays a name."""
    base = "gsiftp://127.0.0.1:1/data/tree"
    listed = [plan_line("/data/tree/%252e%252e%252fevil"), plan_line("/data/tree/sub/a%20b")]
    assert gridftp.listed_files(listed, base) == [
        ("gsiftp://127.0.0.1:1/data/tree/%252e%252e%252fevil", Path("%2e%2e%2fevil")),
        ("gsiftp://127.0.0.1:1/data/tree/sub/a%20b", Path("sub/a b")),
    ]
    hostile = [
        "/data/tree/../../etc/passwd",
        "/data/tree/%2e%2e/%2e%2e/etc/passwd",
        "/data/tree/a%2F..%2F..%2Fx",
        "/data/tree/.",
        "/data/tree//x",
        "/data/tree/x%00y",
        "/data/other/x",
        "/data/treex/y",
    ]
    for path in hostile:
        with pytest.raises(UnsafePath, match="the server listed"):
            gridftp.listed_files([plan_line(path)], base)


def test_odd_names_land_inside_the_destination_and_links_there_are_refused(tmp_path, server):
    remote = tmp_path / "remote"
    (remote / "sub").mkdir(parents=True)
    (remote / "%2e%2e%2fevil").write_text("a")
    (remote / "sub" / "..%2F..%2Fx").write_text("b")
    url = server.url(remote)
    transfer_for(url, ctx(tmp_path, server)).download(url, tmp_path / "back")
    landed = sorted(str(p.relative_to(tmp_path / "back")) for p in (tmp_path / "back").rglob("*"))
    assert landed == ["%2e%2e%2fevil", "sub", "sub/..%2F..%2Fx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back", "remote"]
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePath, match="sub is a symbolic link"):
        transfer_for(url, ctx(tmp_path, server)).download(url, tmp_path / "again")
    (remote / "sub" / "leak").symlink_to(tmp_path / "back" / "%2e%2e%2fevil")
    up = server.url(tmp_path / "up")
    with pytest.raises(UnsafePath, match="leak is a symbolic link"):
        transfer_for(up, ctx(tmp_path, server)).upload(remote, up)
    assert not any(outside.iterdir())
    assert not (tmp_path / "up").exists()
