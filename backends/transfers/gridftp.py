"""``gsiftp://`` and ``ftp://``: GridFTP with globus-url-copy (the HUST'17 paper: GridFTP).

URLs are ``gsiftp://host[:port]/absolute/path``; ``ftp://`` is anonymous. No user or password
may appear in a URL: ``transfers.x509_proxy`` becomes ``X509_USER_PROXY`` for the commands and
the trusted CAs come from the worker's ``X509_CERT_DIR``. Data move in one
``globus-url-copy -cd -p <gridftp_parallel> <gridftp_options> -f LIST`` per step (a tree's
files in one process, data channels reused); a remote tree is enumerated by its recursion,
``globus-url-copy -r -do`` (nothing moved). globus-url-copy can neither rename nor compute
adler32, so namespace operations go through gfal2 (Debian's python3-gfal2 and
gfal2-plugin-gridftp, under the system Python), batched in one session per phase: STAT, the
server's CKSM (sha256 or adler32, over the bytes it holds), RNFR/RNTO, DELE.

Atomic landing, file by file: each file is written under ``context.part_name`` beside its
destination (locally for a download, on the server for an upload); its size and checksum are
compared end to end (the server's CKSM against a local hash of the bytes on disk) and only
then is it renamed into place (os.replace, or RNFR/RNTO on the server). A mismatch deletes
the part and raises TransientError. A file already present with the same size and checksum
is skipped; a killed run's leftover part has the same name and is overwritten. Empty
directories are not reproduced.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from backends.transfers import paths
from backends.transfers.base import EXCLUDE, Transfer, url_path
from backends.transfers.checksum import file_digest
from edgeceleryapp.errors import EdgeCeleryError, PermanentError, TransientError, UnsafePath
from edgeceleryapp.settings import TransferSettings

GLOBUS_URL_COPY = "globus-url-copy"
GFAL_PYTHON = "/usr/bin/python3"  # where Debian's python3-gfal2 is importable

# One gfal2 session: a JSON list of [op, url, *args] in, [errno, result or message] out.
# It leaves with os._exit: gfal2's teardown at interpreter exit aborts now and then (free():
# invalid pointer, SIGABRT) after all the work is done.
_GFAL = """
import json, os, sys, gfal2
ctx = gfal2.creat_context()
def op(name, url, *args):
    if name == "stat":
        st = ctx.stat(url)
        return [st.st_size, st.st_mode & 0o170000 == 0o040000]
    if name == "sum":
        return [ctx.stat(url).st_size, ctx.checksum(url, args[0])]
    if name == "commit":  # final, algorithm, size, digest: rename if they match, else delete
        ok = ctx.stat(url).st_size == args[2] and (
            ctx.checksum(url, args[1]).lower().lstrip("0") == args[3].lstrip("0"))
        ctx.rename(url, args[0]) if ok else ctx.unlink(url)
        return ok
    return ctx.unlink(url)
out = []
for item in json.load(sys.stdin):
    try:
        out.append([0, op(*item)])
    except gfal2.GError as exc:
        out.append([exc.code or 5, str(exc)])
json.dump(out, sys.stdout)
sys.stdout.flush()
os._exit(0)
"""

_TRANSIENT = ("connection refused", "connection reset", "timed out", "timeout", "broken pipe",
              "unable to connect", "no route to host", "unreachable", "end of file")  # fmt: skip
_PERMANENT = (
    (("no such file", "not_found"), "no such file or directory"),
    (("permission denied", "permission_denied"), "permission denied"),
    (("login incorrect", "gridmap", "gss", "credential", "certificate", "proxy"),
     "authentication refused"),
)  # fmt: skip
_PLAN = re.compile(r'^"([^"]+)" "([^"]+)"')


def _error(where: str, text: str) -> EdgeCeleryError:
    """Connection trouble is worth retrying; a missing path, a refused permission or
    credential is not; anything else is retried (and fails with its reason in the end)."""
    low, detail = text.lower(), " ".join(text.split())[-600:] or "(no output)"
    if any(marker in low for marker in _TRANSIENT):
        return TransientError(f"{where}: {detail}")
    for markers, kind in _PERMANENT:
        if any(marker in low for marker in markers):
            return PermanentError(f"{where}: {kind} ({detail})")
    return TransientError(f"{where}: {detail}")


def _missing(code: int, message: str) -> bool:
    return code == 2 and ("no such file" in message.lower() or "not_found" in message.lower())


def _same(remote: object, size: int, digest: str) -> bool:
    """A "sum" result against a local file (adler32 may come without its leading zeros)."""
    return remote[0] == size and remote[1].lower().lstrip("0") == digest.lstrip("0")  # type: ignore[index]


def _skipped(rel: Path) -> bool:
    return bool(EXCLUDE & set(rel.parts)) or (rel.name.startswith(".") and ".part-" in rel.name)


def _names(path: str) -> list[str]:
    """A URL path's components, each decoded on its own: an encoded '/' (%2F) stays inside
    its name instead of becoming a separator."""
    return [unquote(part) for part in path.split("/")]


def safe_name(name: str, where: str) -> str:
    """A name from the server (its listing, or the last part of a URL) as one local file name,
    checked as SFTP's are: no '/', no '.' or '..', nothing empty, no NUL."""
    if name in ("", ".", "..") or "/" in name or "\x00" in name:
        raise UnsafePath(f"{where}: the server listed {name!r}, which is not a plain file name")
    return name


def listed_files(lines: list[str], base: str) -> list[tuple[str, Path]]:
    """The files of globus-url-copy's plan (``-do``) for the tree at ``base``: each source URL
    and its path relative to the tree, every name checked (``safe_name``). An entry outside the
    tree is refused: the listing comes from the server, and the server is not trusted with
    where our files land."""
    root = _names(urlsplit(base).path.rstrip("/"))
    files = []
    for line in lines:
        if not (match := _PLAN.match(line)):
            continue
        names = _names(urlsplit(match[1]).path)
        if names[: len(root)] != root or len(names) <= len(root):
            raise UnsafePath(f"{base}: the server listed {match[1]!r}, outside the tree asked for")
        rel = Path(*(safe_name(name, base) for name in names[len(root) :]))
        if not _skipped(rel):
            files.append((match[1], rel))
    return files


def copy_argv(settings: TransferSettings, listing: Path) -> list[str]:
    """The globus-url-copy command for a list of (source, destination) URL pairs."""
    parallel, extra = ["-p", str(settings.gridftp_parallel)], settings.gridftp_options
    return [GLOBUS_URL_COPY, "-cd", *parallel, *extra, "-f", str(listing)]


class GridFTPTransfer(Transfer):
    schemes = ("gsiftp", "ftp")

    def _run(self, argv: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        proxy = self.settings.x509_proxy
        if proxy is not None:
            if not proxy.is_file():
                raise PermanentError(f"transfers.x509_proxy: {proxy} does not exist")
            env["X509_USER_PROXY"] = str(proxy)
        try:
            return subprocess.run(
                argv, input=stdin, capture_output=True, text=True, errors="replace",
                env=env, timeout=self.settings.timeout, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise TransientError(f"{argv[0]}: no answer within {self.settings.timeout}s") from None
        except FileNotFoundError:
            raise PermanentError(f"{argv[0]}: not installed (see scripts/gridftp.sh)") from None

    def _gfal(self, ops: list[list]) -> list[tuple[int, object]]:
        if not ops:
            return []
        done = self._run([GFAL_PYTHON, "-c", _GFAL], json.dumps(ops))
        if done.returncode != 0:
            if "No module named 'gfal2'" in done.stderr:
                raise PermanentError("gfal2: not installed (Debian: python3-gfal2)")
            raise _error("gfal2", done.stderr)
        return [(code, value) for code, value in json.loads(done.stdout)]

    def _copy(self, pairs: list[tuple[str, str]], where: str) -> None:
        if not pairs:
            return
        with tempfile.NamedTemporaryFile("w", suffix=".urls") as listing:
            listing.writelines(f'"{src}" "{dst}"\n' for src, dst in pairs)
            listing.flush()
            done = self._run(copy_argv(self.settings, Path(listing.name)))
        if done.returncode != 0:
            raise _error(where, done.stderr or done.stdout)

    def _base(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            raise PermanentError(f"{url}: no user or password in URLs; settings hold credentials")
        try:
            parts.port  # noqa: B018 - validates the port
        except ValueError:
            raise PermanentError(f"{url}: invalid port") from None
        if not parts.hostname or not url_path(url).startswith("/"):
            raise PermanentError(f"{url}: expected {parts.scheme}://host[:port]/absolute/path")
        return f"{parts.scheme.lower()}://{parts.netloc}{url_path(url).rstrip('/')}"

    def download(self, url: str, dest: Path) -> None:
        base, algorithm = self._base(url), self.settings.checksum
        dest = self.confine(dest)
        [(code, value)] = self._gfal([["stat", base]])
        if code:
            raise _error(url, str(value))
        single = [(base, Path(safe_name(_names(urlsplit(base).path)[-1], url)))]
        files = self._remote_tree(base) if value[1] else single  # type: ignore[index]
        sums = self._gfal([["sum", remote, algorithm.upper()] for remote, _ in files])
        todo = []
        for (remote, rel), (code, value) in zip(files, sums, strict=True):
            if code:
                raise _error(remote, str(value))
            final = dest / rel
            paths.make_dirs(final.parent, url)
            if paths.kind(final, url) == "file" and _same(
                value, os.lstat(final).st_size, file_digest(final, algorithm)
            ):
                continue
            todo.append((remote, final.with_name(self.context.part_name(final.name)), final, value))
        moved, bad = 0, []
        try:
            for _, part, *_ in todo:  # globus-url-copy then writes into a file of ours, no link
                os.close(paths.open_write(part, url, truncate=True))
            self._copy([(remote, part.as_uri()) for remote, part, *_ in todo], url)
            for _, part, final, value in todo:
                if not _same(value, os.lstat(part).st_size, file_digest(part, algorithm)):
                    bad.append(str(final))
                    continue
                with paths.open_read(part, url) as fh:
                    os.fsync(fh.fileno())
                os.replace(part, final)
                moved += value[0]  # type: ignore[index]
                if self.context.progress:
                    self.context.progress(moved)
        finally:
            for _, part, *_ in todo:
                part.unlink(missing_ok=True)
        if bad:
            raise TransientError(f"{url}: size or {algorithm} differs from the server's: {bad}")

    def _remote_tree(self, base: str) -> list[tuple[str, Path]]:
        """Every file under the remote directory (globus-url-copy's recursion, MLSD)."""
        with tempfile.TemporaryDirectory() as tmp:
            plan = Path(tmp, "plan")
            argv = [GLOBUS_URL_COPY, "-r", "-do", str(plan), base + "/", Path(tmp).as_uri() + "/"]
            done = self._run(argv)
            if done.returncode != 0:
                raise _error(base, done.stderr or done.stdout)
            lines = plan.read_text().splitlines() if plan.exists() else []
        return listed_files(lines, base)

    def upload(self, src: Path, url: str) -> None:
        base, algorithm = self._base(url), self.settings.checksum
        src = self.confine(src)
        found = paths.kind(src, str(src))
        if found == "file":
            local = [(src, Path(src.name))]
        elif found == "dir":
            tree = paths.walk(src, str(src), lambda name: _skipped(Path(name)))
            local = [(src / rel, rel) for rel, kind in tree if kind == "file"]
        else:
            raise PermanentError(f"{src}: no such file or directory")
        sums = self._gfal([["sum", f"{base}/{quote(str(rel))}", algorithm.upper()]
                           for _, rel in local])  # fmt: skip
        todo = []
        for (path, rel), (code, value) in zip(local, sums, strict=True):
            final = f"{base}/{quote(str(rel))}"
            if code and not _missing(code, str(value)):
                raise _error(final, str(value))
            size, digest = path.stat().st_size, file_digest(path, algorithm)
            if not code and _same(value, size, digest):
                continue
            part = f"{base}/{quote(str(rel.with_name(self.context.part_name(rel.name))))}"
            todo.append((path, part, final, size, digest))
        committed = False
        try:
            self._copy([(path.as_uri(), part) for path, part, *_ in todo], url)
            ops = [["commit", part, final, algorithm.upper(), size, digest]
                   for _, part, final, size, digest in todo]  # fmt: skip
            bad, moved = [], 0
            for (_, part, final, size, _), (code, ok) in zip(todo, self._gfal(ops), strict=True):
                if code:
                    raise _error(part, str(ok))
                if ok:
                    moved += size
                else:
                    bad.append(final)
            committed = True
            if self.context.progress:
                self.context.progress(moved)
        finally:
            if not committed and todo:  # best effort: a re-run overwrites what stays
                with contextlib.suppress(EdgeCeleryError):
                    self._gfal([["unlink", part] for _, part, *_ in todo])
        if bad:
            raise TransientError(f"{url}: size or {algorithm} differs from the local file: {bad}")
