"""Transfer plug-ins, picked by URL scheme like kombu's transports: one line per scheme."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from backends.transfers.base import Transfer
from backends.transfers.local import LocalTransfer
from edgeceleryapp.errors import PermanentError

TRANSFERS: dict[str, type[Transfer]] = {
    "local": LocalTransfer,
    "file": LocalTransfer,
}


def transfer_for(url: str, roots: Iterable[Path]) -> Transfer:
    scheme = urlsplit(url).scheme.lower()
    try:
        return TRANSFERS[scheme](roots)
    except KeyError:
        raise PermanentError(
            f"{url}: no transfer plug-in for scheme {scheme!r} "
            f"(known: {', '.join(sorted(TRANSFERS))})"
        ) from None


__all__ = ["TRANSFERS", "Transfer", "transfer_for"]
