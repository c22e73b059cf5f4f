"""Checksums compared end to end: sha256 by default, adler32 as ATLAS's data management uses."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

CHUNK = 1 << 20


class Adler32:
    """adler32 with hashlib's interface, printed as ATLAS prints it (8 hex digits)."""

    name = "adler32"

    def __init__(self) -> None:
        self.value = 1

    def update(self, data: bytes) -> None:
        self.value = zlib.adler32(data, self.value)

    def hexdigest(self) -> str:
        return f"{self.value & 0xFFFFFFFF:08x}"


def hasher(algorithm: str) -> Adler32 | hashlib._Hash:
    if algorithm == "adler32":
        return Adler32()
    if algorithm == "sha256":
        return hashlib.sha256()
    raise ValueError(f"checksum: unknown algorithm {algorithm!r}")


def file_digest(path: Path, algorithm: str) -> str:
    digest = hasher(algorithm)
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()
