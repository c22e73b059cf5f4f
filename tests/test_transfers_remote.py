"""scp://, sftp:// against a real sshd on 127.0.0.1 (tests/sshd.py) and http(s):// against a
local http.server: trees both ways, verification, re-runs, leftovers, error classes."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from backends.transfers import TransferContext, transfer_for
from backends.transfers import sftp as sftp_mod
from edgeceleryapp.devstack import free_port
from edgeceleryapp.errors import PermanentError, TransientError, UnsafePath
from edgeceleryapp.settings import SSHCredentials, TransferSettings
from tests.sshd import keygen, start_sshd

SFTP = "Subsystem sftp internal-sftp"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"), extra_config=(SFTP,))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def fresh_connections():
    yield
    for client in sftp_mod.connections.clients.values():
        client.close()
    sftp_mod.connections.clients.clear()


def ctx(server, root: Path, checksum: str = "sha256", seen: list | None = None, **ssh):
    credentials = {
        "username": server.username,
        "key_file": server.client_key,
        "known_hosts": server.known_hosts,
        "connect_timeout": 5,
        **ssh,
    }
    settings = TransferSettings(
        checksum=checksum, hosts=["127.0.0.1"], ssh=SSHCredentials(**credentials)
    )
    progress = seen.append if seen is not None else None
    return TransferContext(roots=[root], settings=settings, token="t1", progress=progress)


def url(scheme: str, server, path: Path) -> str:
    return f"{scheme}://127.0.0.1:{server.port}{path}"


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def stats(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_ino)
        for p in root.rglob("*")
        if p.is_file()
    }


def make_tree(root: Path, files: int) -> None:
    for i in range(files):
        path = root / f"d{i % 20:02d}" / f"f{i:04d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"file {i}\n".encode() * (i % 7))
    (root / "big.bin").write_bytes(os.urandom(4 << 20))
    (root / ".edgecelery").mkdir()
    (root / ".edgecelery" / "exit_code").write_text("0")  # control files stay at the site


# -- scp:// and sftp:// ----------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["sftp", "scp"])
def test_a_single_file_both_ways(sshd, tmp_path, scheme):
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "in.dat").write_bytes(data := os.urandom(3 << 20))
    seen: list[int] = []
    context = ctx(sshd, tmp_path, seen=seen)
    transfer_for(url(scheme, sshd, remote / "in.dat"), context).download(
        url(scheme, sshd, remote / "in.dat"), tmp_path / "local"
    )
    assert (tmp_path / "local" / "in.dat").read_bytes() == data
    assert seen[-1] == 3 << 20 and seen == sorted(seen)
    transfer_for(url(scheme, sshd, remote / "out"), context).upload(
        tmp_path / "local", url(scheme, sshd, remote / "out")
    )
    assert tree(remote / "out") == {"in.dat": data}


@pytest.mark.parametrize(("scheme", "files"), [("sftp", 2000), ("scp", 40)])
def test_trees_both_ways_and_a_rerun_moves_nothing(sshd, tmp_path, scheme, files):
    src, remote, back = tmp_path / "src", tmp_path / "remote" / "a b", tmp_path / "back"
    make_tree(src, files)
    seen: list[int] = []
    transfer = transfer_for(url(scheme, sshd, remote), ctx(sshd, tmp_path, seen=seen))
    transfer.upload(src, url(scheme, sshd, remote))
    expected = {k: v for k, v in tree(src).items() if not k.startswith(".edgecelery")}
    assert tree(remote) == expected
    assert seen[-1] == sum(len(v) for v in expected.values())
    before, seen[:] = stats(remote), []
    transfer.upload(src, url(scheme, sshd, remote))
    assert (seen, stats(remote)) == ([], before)

    transfer.download(url(scheme, sshd, remote), back)
    assert tree(back) == expected
    before, seen[:] = stats(back), []
    transfer.download(url(scheme, sshd, remote), back)
    assert (seen, stats(back)) == ([], before)


@pytest.mark.parametrize("direction", ["download", "upload"])
def test_same_size_other_bytes_is_copied_again(sshd, tmp_path, direction):
    """The checksum, not the size, decides what is skipped."""
    here, there = tmp_path / "here", tmp_path / "there"
    make_tree(here, 10)
    shutil.copytree(here, there)
    (here / "d03" / "f0003.txt").write_bytes(b"FILE 3\n" * 3)  # same size as there
    seen: list[int] = []
    transfer = transfer_for(url("sftp", sshd, there), ctx(sshd, tmp_path, seen=seen))
    if direction == "upload":
        transfer.upload(here, url("sftp", sshd, there))
    else:
        transfer.download(url("sftp", sshd, here), there)
    assert seen == [21]
    assert tree(here) == tree(there)


def test_leftovers_of_a_killed_run_are_replaced_not_left(sshd, tmp_path):
    src, remote, back = tmp_path / "src", tmp_path / "remote", tmp_path / "back"
    src.mkdir()
    remote.mkdir()
    back.mkdir()
    (src / "big.dat").write_bytes(data := os.urandom(200_000))
    context = ctx(sshd, tmp_path)
    (remote / context.part_name("big.dat")).write_bytes(b"x" * 123)  # the killed run's part
    (back / context.part_name("big.dat")).write_bytes(b"y" * 99_999)
    transfer = transfer_for(url("sftp", sshd, remote), context)
    transfer.upload(src, url("sftp", sshd, remote))
    assert tree(remote) == {"big.dat": data}
    transfer.download(url("sftp", sshd, remote), back)
    assert tree(back) == {"big.dat": data}


@pytest.mark.parametrize("direction", ["download", "upload"])
@pytest.mark.parametrize("algorithm", ["sha256", "adler32"])
def test_a_corrupted_copy_is_caught_and_the_next_attempt_succeeds(
    sshd, tmp_path, monkeypatch, direction, algorithm
):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "f.bin").write_bytes(data := os.urandom(300_000))
    real, flipped = sftp_mod._pump, []

    class Flip:
        def __init__(self, dst):
            self.dst = dst

        def write(self, block):
            if not flipped:
                flipped.append(True)
                block = bytes([block[0] ^ 0xFF]) + block[1:]
            return self.dst.write(block)

    def pump(src, dst, size, digest, moved):
        # Damage between the hash and the write, in the copy only (not in a re-read).
        if dst is not sftp_mod._DISCARD:
            dst = Flip(dst)
        return real(src, dst, size, digest, moved)

    monkeypatch.setattr(sftp_mod, "_pump", pump)
    used, real_hasher = [], sftp_mod.hasher
    monkeypatch.setattr(sftp_mod, "hasher", lambda a: used.append(a) or real_hasher(a))
    transfer = transfer_for(url("sftp", sshd, dst), ctx(sshd, tmp_path, checksum=algorithm))

    def attempt():
        if direction == "upload":
            transfer.upload(src, url("sftp", sshd, dst))
        else:
            transfer.download(url("sftp", sshd, src / "f.bin"), dst)

    with pytest.raises(TransientError, match=f"{algorithm} checksum of the copy differs"):
        attempt()
    assert flipped and (not dst.exists() or not list(dst.iterdir()))  # no part file remains
    attempt()
    assert tree(dst) == {"f.bin": data}
    assert set(used) == {algorithm}


def test_one_connection_is_reused(sshd, tmp_path):
    (tmp_path / "f").write_text("x")
    for _ in range(2):
        transfer_for(url("sftp", sshd, tmp_path / "f"), ctx(sshd, tmp_path)).download(
            url("sftp", sshd, tmp_path / "f"), tmp_path / "copy"
        )
    assert len(sftp_mod.connections.clients) == 1


def test_a_dropped_connection_is_opened_again(sshd, tmp_path):
    (tmp_path / "f").write_text("x")
    address = url("sftp", sshd, tmp_path / "f")
    transfer = transfer_for(address, ctx(sshd, tmp_path))
    transfer.download(address, tmp_path / "copy")
    next(iter(sftp_mod.connections.clients.values())).get_transport().close()
    transfer.download(address, tmp_path / "again")
    assert (tmp_path / "again" / "f").read_text() == "x"


def test_links_on_our_side_are_refused_both_ways(sshd, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not yours")
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok").write_text("ok")
    (src / "leak").symlink_to(outside / "secret")
    up = url("sftp", sshd, tmp_path / "remote")
    with pytest.raises(UnsafePath, match="leak is a symbolic link; links are not followed"):
        transfer_for(up, ctx(sshd, tmp_path)).upload(src, up)
    assert not (tmp_path / "remote" / "leak").exists()
    remote = tmp_path / "rtree"
    (remote / "sub").mkdir(parents=True)
    (remote / "sub" / "f").write_text("f")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(outside, target_is_directory=True)
    down = url("sftp", sshd, remote)
    with pytest.raises(UnsafePath, match="sub is a symbolic link"):
        transfer_for(down, ctx(sshd, tmp_path)).download(down, dest)
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]


def test_a_server_without_sftp_and_a_file_for_a_directory_are_permanent(sshd, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("x")
    (tmp_path / "plain").write_text("not a directory")
    into_file = url("scp", sshd, tmp_path / "plain")
    with pytest.raises(PermanentError, match=r"plain: not a directory"):
        transfer_for(into_file, ctx(sshd, tmp_path)).upload(tmp_path / "src", into_file)
    server = start_sshd(tmp_path / "nosftp")  # no Subsystem line: SFTP is refused
    try:
        address = url("scp", server, tmp_path / "src")
        with pytest.raises(PermanentError, match="refused the SFTP subsystem"):
            transfer_for(address, ctx(server, tmp_path)).download(address, tmp_path / "in")
    finally:
        server.stop()


def test_unknown_or_changed_host_keys_are_refused(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(PermanentError, match="host key unknown"):
        transfer_for(url("sftp", sshd, tmp_path), ctx(sshd, tmp_path, known_hosts=empty)).download(
            url("sftp", sshd, tmp_path), tmp_path / "x"
        )
    other = keygen(tmp_path / "other_host").with_suffix(".pub").read_text().split()
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    with pytest.raises(PermanentError, match="host key does not match"):
        transfer_for(url("scp", sshd, tmp_path), ctx(sshd, tmp_path, known_hosts=wrong)).download(
            url("scp", sshd, tmp_path), tmp_path / "x"
        )


def test_an_unauthorised_key_is_refused(sshd, tmp_path):
    stranger = keygen(tmp_path / "stranger")
    with pytest.raises(PermanentError, match="authentication refused"):
        transfer_for(url("sftp", sshd, tmp_path), ctx(sshd, tmp_path, key_file=stranger)).upload(
            tmp_path, url("sftp", sshd, tmp_path / "out")
        )


def test_a_missing_remote_path_is_permanent_and_named(sshd, tmp_path):
    missing = url("sftp", sshd, tmp_path / "no" / "such.dat")
    with pytest.raises(PermanentError, match=r"no/such\.dat: no such file or directory"):
        transfer_for(missing, ctx(sshd, tmp_path)).download(missing, tmp_path / "in")


def test_permission_denied_is_permanent_and_named(tmp_path):
    """We are root, so file modes deny nothing: the server is made read-only instead
    (internal-sftp -R answers every write with SSH2_FX_PERMISSION_DENIED)."""
    server = start_sshd(tmp_path / "ro", extra_config=(f"{SFTP} -R",))
    try:
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "f").write_text("x")
        target = url("sftp", server, tmp_path / "ro")  # exists: the file open is refused
        with pytest.raises(PermanentError, match=r"/ro/f: permission denied"):
            transfer_for(target, ctx(server, tmp_path)).upload(tmp_path / "src", target)
    finally:
        server.stop()


def test_connection_refused_is_transient(sshd, tmp_path):
    nobody = f"sftp://127.0.0.1:{free_port()}{tmp_path}"
    with pytest.raises(TransientError):
        transfer_for(nobody, ctx(sshd, tmp_path)).download(nobody, tmp_path / "in")


def test_credentials_come_only_from_settings(sshd, tmp_path):
    with pytest.raises(PermanentError, match=r"transfers\.ssh"):
        context = TransferContext([tmp_path], TransferSettings(hosts=["127.0.0.1"]))
        transfer_for("sftp://127.0.0.1/x", context).download("sftp://127.0.0.1/x", tmp_path)
    other_user = f"scp://mallory@127.0.0.1:{sshd.port}{tmp_path}"
    with pytest.raises(PermanentError, match=r"transfers\.ssh\.username"):
        transfer_for(other_user, ctx(sshd, tmp_path)).download(other_user, tmp_path / "in")


# -- http:// and https:// ---------------------------------------------------------------------


class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/fail":
            self.send_error(500, "broken on purpose")
        elif self.path == "/short":  # promises more than it sends, then hangs up
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"z" * 10)
            self.close_connection = True
        elif self.path.startswith("/to/"):  # a redirect to the rest of the path
            self.send_response(302)
            self.send_header("Location", self.path[len("/to/") :])
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """A plain and a TLS http.server on 127.0.0.1 serving one directory; the TLS one with a
    self-signed certificate made by the openssl command line."""
    root = tmp_path_factory.mktemp("web")
    (root / "site").mkdir()
    (root / "site" / "data.bin").write_bytes(os.urandom(1 << 20))
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    servers, threads = [], []
    for tls in (False, True):
        handler = functools.partial(Handler, directory=str(root / "site"))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threads.append(threading.Thread(target=server.serve_forever, daemon=True))
        threads[-1].start()
        servers.append(server)
    yield {
        "http": f"http://127.0.0.1:{servers[0].server_port}",
        "https": f"https://127.0.0.1:{servers[1].server_port}",
        "root": root / "site",
        "cert": cert,
    }
    for server, thread in zip(servers, threads, strict=True):
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch):
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def fetch(address: str, dest: Path, progress=None, **settings) -> None:
    settings.setdefault("hosts", ["127.0.0.1"])
    context = TransferContext(
        roots=[dest.parent], settings=TransferSettings(**settings), token="t1", progress=progress
    )
    transfer_for(address, context).download(address, dest)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_http_downloads_one_file(web, tmp_path, scheme):
    seen: list[int] = []
    fetch(f"{web[scheme]}/data.bin", tmp_path / "in", seen.append, ca_file=web["cert"])
    assert (tmp_path / "in" / "data.bin").read_bytes() == (web["root"] / "data.bin").read_bytes()
    assert seen[-1] == 1 << 20
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["data.bin"]


def test_http_errors_are_classified(web, tmp_path):
    with pytest.raises(PermanentError, match="HTTP 404"):
        fetch(f"{web['http']}/missing.bin", tmp_path / "in")
    with pytest.raises(TransientError, match="HTTP 500"):
        fetch(f"{web['http']}/fail", tmp_path / "in")
    with pytest.raises(TransientError, match="10 bytes arrived of Content-Length 1000"):
        fetch(f"{web['http']}/short", tmp_path / "in")
    with pytest.raises(TransientError):
        fetch(f"http://127.0.0.1:{free_port()}/data.bin", tmp_path / "in")
    with pytest.raises(PermanentError, match="names a directory"):
        fetch(f"{web['http']}/", tmp_path / "in")
    assert not any((tmp_path / "in").iterdir())  # no part file left by any of them


def test_redirects_are_followed_only_where_the_site_allows(web, tmp_path):
    fetch(f"{web['http']}/to/{web['http']}/data.bin", tmp_path / "in", hosts=["127.0.0.1"])
    assert (tmp_path / "in" / "data.bin").stat().st_size == 1 << 20
    elsewhere = web["http"].replace("127.0.0.1", "localhost")
    with pytest.raises(PermanentError, match="host 'localhost' is not allowed"):
        fetch(f"{web['http']}/to/{elsewhere}/data.bin", tmp_path / "b", hosts=["127.0.0.1"])
    with pytest.raises(PermanentError, match="refused redirect"):
        fetch(f"{web['https']}/to/{web['http']}/data.bin", tmp_path / "c", ca_file=web["cert"])


def test_https_without_the_servers_ca_is_refused_permanently(web, tmp_path):
    """A certificate this site does not trust will not become trusted by retrying: an
    operator has to set transfers.ca_file (or it is an impostor), so the error is permanent."""
    with pytest.raises(PermanentError, match="certificate refused"):
        fetch(f"{web['https']}/data.bin", tmp_path / "in")


def test_stage_out_over_http_is_refused(web, tmp_path):
    with pytest.raises(PermanentError, match="stage-out over http is not supported"):
        context = TransferContext([tmp_path], TransferSettings(hosts=["127.0.0.1"]))
        transfer_for(web["http"], context).upload(tmp_path, f"{web['http']}/up")
