"""The ``directory`` job source: a JSON file dropped in a watched folder becomes an Argo job.

A file is taken by renaming it into ``.claimed/`` under a name made unique by the time and a
random token (a rename is atomic: of two argo workers, one gets it; a name used again later
makes a new job). Its job is stored under the key ``source:<name>:<claimed name>``, then the
file moves on to ``taken/``. A crash in between leaves it in ``.claimed/``, where the next
look finds it first and finds its job: one file, one job. A refused file goes to
``refused/`` with a ``<name>.why`` beside it naming each field and problem, and is kept as
a dead letter.

Only names ending in ``.json`` and not starting with a dot are looked at, so a producer
writes ``.shot.json.part`` (or anything else) and renames it when complete. Symbolic links,
folders and other files that are not regular files are refused, never followed.
"""

from __future__ import annotations

import os
import secrets
import stat
from datetime import datetime
from pathlib import Path

from edgeceleryapp.errors import ValidationFailed
from edgeceleryapp.models import utcnow
from edgeceleryapp.settings import DirectorySourceSettings, get_settings
from workflows.inbound import Received, screen
from workflows.sources.base import JobSource, Offer, Taken, refused_offer, source_key

CLAIMED = ".claimed"
TAKEN = "taken"
REFUSED = "refused"
# The end of a dropped file's name kept in its claimed name (with the time and token before
# it, the name stays within the 255 bytes file systems allow and the id within its column).
NAME_KEPT = 150


def wanted(name: str) -> bool:
    """Whether a name in the watched folder is a job to take (not a partial write)."""
    return name.endswith(".json") and not name.startswith(".")


def claimed_name(original: str, now: datetime, token: str) -> str:
    """The unique name a dropped file is taken under; it sorts in the order files were
    taken."""
    return f"{now:%Y%m%dT%H%M%S.%f}-{token}-{original[-NAME_KEPT:]}"


def read_regular(path: Path, limit: int) -> bytes:
    """Up to ``limit + 1`` bytes of ``path`` if it is a regular file; ``ValidationFailed``
    for a symbolic link (not followed), a folder, a pipe or a device."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if os.path.islink(path):
            raise ValidationFailed(
                [("file", "is a symbolic link: refused, not followed")]
            ) from None
        raise ValidationFailed([("file", f"cannot be read: {exc.strerror}")]) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ValidationFailed([("file", "is not a regular file")])
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(fd, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def offer_for(source: str, path: Path, limit: int) -> Offer:
    """A claimed file as an offer: its message, or why it makes none (screened as an intake
    message is: size, JSON, nesting)."""
    key = source_key(source, path.name)
    try:
        body = read_regular(path, limit)
    except ValidationFailed as exc:
        return refused_offer(key, b"", exc.errors)
    try:
        screened = screen(Received(body, "application/json", None))
    except ValidationFailed as exc:
        return refused_offer(key, body, exc.errors)
    return Offer(key, screened.data, body)


def why(errors: list[tuple[str, str]]) -> str:
    """The text of a refused file's ``.why``: one problem a line, each naming its field."""
    return "".join(f"{field}: {problem}\n" for field, problem in errors)


class DirectorySource(JobSource):
    settings: DirectorySourceSettings

    @property
    def folder(self) -> Path:
        return self.settings.path

    def start(self) -> None:
        for sub in (CLAIMED, TAKEN, REFUSED):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)

    def poll(self) -> int:
        claimed = self.folder / CLAIMED
        names = sorted(os.listdir(claimed))[: self.settings.batch]  # a crash's leftovers first
        names += self._claim(self.settings.batch - len(names))
        if not names:
            return 0
        limit = get_settings().message_max_bytes
        offers = [offer_for(self.name, claimed / name, limit) for name in names]
        for name, taken in zip(names, self.take(offers), strict=True):
            self._set_down(claimed / name, taken)
        return len(names)

    def _claim(self, room: int) -> list[str]:
        """Rename up to ``room`` dropped files, oldest first, into ``.claimed/``; their new
        names. A file another worker took first is skipped."""
        if room <= 0:
            return []
        with os.scandir(self.folder) as entries:
            dropped = [
                (entry.stat(follow_symlinks=False).st_mtime_ns, entry.name)
                for entry in entries
                if wanted(entry.name)
            ]
        names = []
        for _, name in sorted(dropped)[:room]:
            new = claimed_name(name, utcnow(), secrets.token_hex(3))
            try:
                os.rename(self.folder / name, self.folder / CLAIMED / new)
            except FileNotFoundError:
                continue
            names.append(new)
        return names

    def _set_down(self, path: Path, taken: Taken) -> None:
        if taken.argo_id is not None:
            os.rename(path, self.folder / TAKEN / path.name)
            return
        refused = self.folder / REFUSED
        (refused / f"{path.name}.why").write_text(why(taken.errors or []))
        os.rename(path, refused / path.name)
