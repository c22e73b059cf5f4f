"""Transfer plug-ins, picked by URL scheme like kombu's transports: one line per scheme."""

from __future__ import annotations

from urllib.parse import urlsplit

from backends.transfers.base import Transfer, TransferContext, check_url
from backends.transfers.gridftp import GridFTPTransfer
from backends.transfers.http import HTTPTransfer
from backends.transfers.local import LocalTransfer
from backends.transfers.sftp import SFTPTransfer
from edgeceleryapp.errors import PermanentError

TRANSFERS: dict[str, type[Transfer]] = {
    "local": LocalTransfer,
    "file": LocalTransfer,
    "scp": SFTPTransfer,
    "sftp": SFTPTransfer,
    "http": HTTPTransfer,
    "https": HTTPTransfer,
    "gsiftp": GridFTPTransfer,
    "ftp": GridFTPTransfer,
}


def transfer_for(url: str, context: TransferContext) -> Transfer:
    """The plug-in for the URL's scheme, after the site's scheme and host checks."""
    check_url(url, context.settings)
    scheme = urlsplit(url).scheme.lower()
    try:
        return TRANSFERS[scheme](context)
    except KeyError:
        raise PermanentError(
            f"{url}: no transfer plug-in for scheme {scheme!r} "
            f"(known: {', '.join(sorted(TRANSFERS))})"
        ) from None


__all__ = ["TRANSFERS", "Transfer", "TransferContext", "transfer_for"]
