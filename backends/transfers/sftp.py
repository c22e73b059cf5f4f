"""``scp://`` and ``sftp://``: files and trees over SSH with paramiko (the HUST'17 paper: scp).

Both schemes use paramiko's SFTP subsystem: scp:// URLs are served with SFTP on the same SSH
connection (as OpenSSH's scp does since 9.0), which gives an atomic rename
(posix-rename@openssh.com) and a remote stat, neither of which the old scp protocol has.

URLs are ``scp://host[:port]/absolute/path``. Credentials come only from ``transfers.ssh``:
key authentication, the host key must be in its known_hosts (RejectPolicy), a user named in a
URL must be its username. One connection per (host, port, user, key, known_hosts) and process.

Files land under ``context.part_name`` beside their destination and are renamed when verified;
one already there with the same size and checksum is skipped (hashing the remote copy costs
reading it, done only when sizes match). A remote ``sha256sum`` is not portable and OpenSSH's
sftp-server has no ``check-file``, so: a download is hashed as it streams and compared with a
hash of the landed file, and the landed size with the remote stat (SSH's MAC protects the
wire; this catches damage between socket and disk, and truncation). An upload is hashed as it
is read, then the remote temporary file is fstat'ed and read back through SFTP on the same
handle and hashed: a second network pass (pipelined, about the upload's time again), but the
only trustworthy check that the server stored what we sent (paramiko drops the status of
pipelined writes read by other requests, and of the close).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote, urlsplit

import paramiko

from backends.ssh_connection import Connections
from backends.transfers import paths
from backends.transfers.base import EXCLUDE, Transfer
from backends.transfers.checksum import CHUNK, file_digest, hasher
from edgeceleryapp.errors import EdgeCeleryError, PermanentError, TransientError, UnsafePath
from edgeceleryapp.settings import SSHSettings

connections = Connections()
_READ_AHEAD = paramiko.SFTPFile.MAX_REQUEST_SIZE  # larger files are read with prefetch
Attrs = paramiko.SFTPAttributes
Moved = Callable[[int], None]
_DISCARD = SimpleNamespace(write=lambda block: None)


def _pump(src: Any, dst: Any, size: int, digest: Any, moved: Moved) -> int:
    """Stream the first ``size`` bytes of ``src`` into ``dst`` in CHUNK blocks, hashing them as
    they are read; return how many moved. Reading exactly the stat size spares a round trip
    per file (the sizes are compared afterwards)."""
    count = 0
    while count < size and (block := src.read(min(CHUNK, size - count))):
        digest.update(block)
        dst.write(block)
        count += len(block)
        moved(len(block))
    return count


def _is_part(name: str) -> bool:
    return name.startswith(".") and ".part-" in name


def _skipped(name: str) -> bool:
    return name in EXCLUDE or _is_part(name)


class SFTPTransfer(Transfer):
    schemes = ("scp", "sftp")

    def _target(self, url: str) -> tuple[SSHSettings, str]:
        parts, ssh = urlsplit(url), self.settings.ssh
        if ssh is None:
            raise PermanentError(
                f"{url}: {parts.scheme}:// needs SSH credentials in the site's transfers.ssh "
                "settings (username, key_file, known_hosts)"
            )
        if parts.password is not None:
            raise PermanentError(f"{url}: no password in URLs; credentials come from settings")
        if parts.username is not None and unquote(parts.username) != ssh.username:
            raise PermanentError(f"{url}: user is not transfers.ssh.username ({ssh.username})")
        try:
            port = parts.port or ssh.port
        except ValueError:
            raise PermanentError(f"{url}: invalid port") from None
        path = unquote(parts.path)
        if not parts.hostname or not path.startswith("/"):
            raise PermanentError(f"{url}: expected {parts.scheme}://host[:port]/absolute/path")
        for name in ("known_hosts", "key_file"):
            if not Path(getattr(ssh, name)).is_file():
                raise PermanentError(f"transfers.ssh.{name}: {getattr(ssh, name)} is no file")
        fields = ssh.model_dump(include={"username", "key_file", "known_hosts", "connect_timeout"})
        return SSHSettings(host=parts.hostname, port=port, **fields), posixpath.normpath(path)

    @contextlib.contextmanager
    def _session(self, url: str) -> Iterator[tuple[paramiko.SFTPClient, str]]:
        """An SFTP session on this process's connection to the host (opened again if it
        dropped), and the remote path; SFTP and connection errors mapped."""
        ssh, path = self._target(url)
        self._key = (ssh.host, ssh.port, ssh.username, str(ssh.key_file), str(ssh.known_hosts))
        client = connections.get(self._key, ssh)
        with self._mapped(url):
            try:
                sftp = client.open_sftp()
            except paramiko.ChannelException:  # no session now (e.g. MaxSessions): transient
                raise
            except paramiko.SSHException:
                transport = client.get_transport()
                if transport is None or not transport.is_active():
                    raise
                raise PermanentError(f"{url}: the server refused the SFTP subsystem") from None
            sftp.get_channel().settimeout(self.settings.timeout)  # a silent server: transient
        with sftp, self._mapped(url):
            yield sftp, path

    @contextlib.contextmanager
    def _mapped(self, where: str) -> Iterator[None]:
        try:
            yield
        except EdgeCeleryError:
            raise
        except FileNotFoundError as exc:  # paramiko names no file; a local error does
            raise PermanentError(f"{exc.filename or where}: no such file or directory") from None
        except PermissionError as exc:
            raise PermanentError(f"{exc.filename or where}: permission denied") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            connections.drop(self._key)
            raise TransientError(f"{where}: {exc or type(exc).__name__} (ssh)") from None

    def _at(self, path: str) -> str:
        return f"{self._key[0]}:{path}"

    def _same(self, fh: paramiko.SFTPFile, size: int, digest: str) -> bool:
        """Whether the remote file's first ``size`` bytes have ``digest``."""
        if size > _READ_AHEAD:
            fh.prefetch(size)
        remote = hasher(self.settings.checksum)
        return _pump(fh, _DISCARD, size, remote, lambda n: None) == size and (
            remote.hexdigest() == digest
        )

    def _complete(self, sftp: paramiko.SFTPClient, path: str, size: int, local: Path) -> bool:
        """Whether the remote file holds what the local one of the same size holds."""
        with sftp.open(path, "rb") as fh:
            return self._same(fh, size, file_digest(local, self.settings.checksum))

    def _moved(self, done: list[int]) -> Moved:
        def moved(n: int) -> None:
            done[0] += n
            if self.context.progress:
                self.context.progress(done[0])

        return moved

    def download(self, url: str, dest: Path) -> None:
        dest, moved = self.confine(dest), self._moved([0])
        with self._session(url) as (sftp, root):
            attrs = sftp.stat(root)
            if not stat.S_ISDIR(attrs.st_mode or 0):
                self._get(sftp, root, attrs, dest / posixpath.basename(root), moved)
                return
            stack = [(root, dest)]
            while stack:
                rdir, ldir = stack.pop()
                paths.make_dirs(ldir, url)
                with self._mapped(self._at(rdir)):
                    entries = sorted(sftp.listdir_attr(rdir), key=lambda e: e.filename)
                for entry in entries:
                    rpath, name = posixpath.join(rdir, entry.filename), entry.filename
                    if "/" in name or name in ("", ".", ".."):
                        raise UnsafePath(f"{self._at(rdir)}: the server listed {name!r}")
                    if stat.S_ISLNK(entry.st_mode or 0):  # links to files are followed
                        with self._mapped(self._at(rpath)):
                            entry = sftp.stat(rpath)
                        if not stat.S_ISREG(entry.st_mode or 0):
                            continue
                    if stat.S_ISDIR(entry.st_mode or 0) and name not in EXCLUDE:
                        stack.append((rpath, ldir / name))
                    elif stat.S_ISREG(entry.st_mode or 0) and not _is_part(name):
                        self._get(sftp, rpath, entry, ldir / name, moved)

    def _get(
        self, sftp: paramiko.SFTPClient, path: str, attrs: Attrs, target: Path, moved: Moved
    ) -> None:
        algorithm, size, where = self.settings.checksum, attrs.st_size or 0, self._at(path)
        with self._mapped(where):
            present = paths.kind(target, where) == "file"
            same_size = present and os.lstat(target).st_size == size
            if same_size and self._complete(sftp, path, size, target):
                return
            paths.make_dirs(target.parent, where)
            tmp, digest = target.with_name(self.context.part_name(target.name)), hasher(algorithm)
            try:
                fout = os.fdopen(paths.open_write(tmp, where, truncate=True), "wb")
                with fout, sftp.open(path, "rb") as fin:
                    if size > _READ_AHEAD:
                        fin.prefetch(size)
                    _pump(fin, fout, size, digest, moved)
                    fout.flush()
                    os.fsync(fout.fileno())
                if (landed := tmp.stat().st_size) != size:
                    raise TransientError(f"{where}: {landed} bytes arrived, the remote has {size}")
                if file_digest(tmp, algorithm) != digest.hexdigest():
                    raise TransientError(f"{where}: {algorithm} checksum of the copy differs")
                os.chmod(tmp, (attrs.st_mode or 0o644) & 0o777)
                os.utime(tmp, (attrs.st_atime or 0, attrs.st_mtime or 0))
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)

    def upload(self, src: Path, url: str) -> None:
        src, moved = self.confine(src), self._moved([0])
        found = paths.kind(src, str(src))
        if found is None:
            raise PermanentError(f"{src}: no such file or directory")
        with self._session(url) as (sftp, root):
            if found == "file":
                self._put(sftp, src, root, self._makedirs(sftp, root), moved)
                return
            listings = {Path(): self._makedirs(sftp, root)}
            for rel, kind in paths.walk(src, str(src), _skipped):
                rdir = root if rel.parent == Path() else posixpath.join(root, rel.parent.as_posix())
                if kind == "dir":
                    listings[rel] = self._makedirs(sftp, posixpath.join(root, rel.as_posix()))
                else:
                    self._put(sftp, src / rel, rdir, listings[rel.parent], moved)

    def _makedirs(self, sftp: paramiko.SFTPClient, path: str) -> dict[str, Attrs]:
        """Create the remote directory (and parents); return what it holds already (one
        listing per directory rather than one stat per file)."""
        with self._mapped(self._at(path)):
            try:
                return {e.filename: e for e in sftp.listdir_attr(path)}
            except FileNotFoundError:
                with contextlib.suppress(FileNotFoundError):
                    sftp.stat(path)
                    raise PermanentError(f"{self._at(path)}: not a directory") from None
                if (parent := posixpath.dirname(path)) != path:
                    self._makedirs(sftp, parent)
                sftp.mkdir(path)
                return {}

    def _put(
        self, sftp: paramiko.SFTPClient, src: Path, rdir: str, listing: dict, moved: Moved
    ) -> None:
        algorithm, path, local = self.settings.checksum, posixpath.join(rdir, src.name), src.lstat()
        where, remote, size = self._at(path), listing.get(src.name), local.st_size
        with self._mapped(where):
            same_size = remote and stat.S_ISREG(remote.st_mode or 0) and remote.st_size == size
            if same_size and self._complete(sftp, path, size, src):
                return
            tmp = posixpath.join(rdir, self.context.part_name(src.name))
            digest, renamed = hasher(algorithm), False
            try:
                # One read-write handle: write (pipelined), fstat, read back, mode and times.
                with paths.open_read(src, str(src)) as fin, sftp.open(tmp, "w+b") as fout:
                    fout.set_pipelined(True)
                    _pump(fin, fout, size, digest, moved)
                    if (stored := fout.stat().st_size) != size:
                        raise TransientError(f"{where}: {stored} bytes stored of {size}")
                    fout.seek(0)
                    if not self._same(fout, size, digest.hexdigest()):
                        raise TransientError(f"{where}: {algorithm} checksum of the copy differs")
                    fout.chmod(local.st_mode & 0o777)
                    fout.utime((local.st_atime, local.st_mtime))
                sftp.posix_rename(tmp, path)
                renamed = True
            finally:
                if not renamed:
                    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                        sftp.remove(tmp)
