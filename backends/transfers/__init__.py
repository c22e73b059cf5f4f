"""Transfer plug-ins, picked by URL scheme like kombu's transports: one line per scheme in
``backends.registry.TRANSFERS``, and a site's own schemes in its ``transfers.plugins``."""

from __future__ import annotations

from urllib.parse import urlsplit

from backends import registry
from backends.transfers.base import Transfer, TransferContext, check_url
from edgeceleryapp.errors import PermanentError

TRANSFERS = registry.TRANSFERS


def transfer_for(url: str, context: TransferContext, what: str = "") -> Transfer:
    """The plug-in for the URL's scheme, after the site's scheme and host checks and the job's
    scope (``what``, the URL's field, names it in errors)."""
    try:
        check_url(url, context.settings)
    except PermanentError as exc:
        raise type(exc)(f"{what}: {exc}" if what else str(exc)) from None
    if context.scope is not None:
        context.scope.check(url, what)
    table = TRANSFERS | context.settings.plugins
    scheme = urlsplit(url).scheme.lower()
    return registry.load("transfers.plugins", table[scheme], table, Transfer)(context)


__all__ = ["TRANSFERS", "Transfer", "TransferContext", "transfer_for"]
