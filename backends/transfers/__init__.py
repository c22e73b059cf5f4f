"""Transfer plug-ins, picked by URL scheme like kombu's transports: one line per scheme in
``backends.registry.TRANSFERS``, and a site's own schemes in its ``transfers.plugins``."""

from __future__ import annotations

from urllib.parse import urlsplit

from backends import registry
from backends.transfers.base import Transfer, TransferContext, check_url
from edgeceleryapp.errors import PermanentError

TRANSFERS = registry.TRANSFERS


def transfer_for(url: str, context: TransferContext) -> Transfer:
    """The plug-in for the URL's scheme, after the site's scheme and host checks."""
    check_url(url, context.settings)
    scheme = urlsplit(url).scheme.lower()
    table = TRANSFERS | context.settings.plugins
    if scheme not in table:
        raise PermanentError(
            f"{url}: no transfer plug-in for scheme {scheme!r} (known: {', '.join(sorted(table))})"
        )
    return registry.load("transfers.plugins", table[scheme], table, Transfer)(context)


__all__ = ["TRANSFERS", "Transfer", "TransferContext", "transfer_for"]
