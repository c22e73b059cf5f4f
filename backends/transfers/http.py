"""``http://`` and ``https://``: stage-in of one file with the standard library (urllib).

The file is named by the last part of the URL's path (a URL naming a directory is refused),
streamed under a temporary name (``context.part_name``) beside its destination, checked
against Content-Length when the server sends one, hashed as it streams and compared with a
hash of the landed file, then renamed into place. HTTP offers no checksum to compare with end
to end; TLS protects https:// on the wire. A re-run fetches the file again (no skip).

https:// verifies the server's certificate and host name against the system's CA bundle, or
against ``transfers.ca_file`` when set. Redirects are followed only to http(s) URLs the site
allows (its scheme and host lists), never from https:// down to http://.

Errors: 401, 403, 404, 410 and other 4xx, a refused certificate, a missing ca_file are
permanent; 408, 429, 5xx, refused or reset connections and time-outs are transient.
"""

from __future__ import annotations

import http.client
import os
import posixpath
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit

from backends.transfers import paths
from backends.transfers.base import Transfer, check_url
from backends.transfers.checksum import CHUNK, file_digest, hasher
from edgeceleryapp.errors import PermanentError, TransientError
from edgeceleryapp.settings import TransferSettings

TRANSIENT_STATUS = frozenset({408, 425, 429})


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only where the site allows, and never from https to http."""

    def __init__(self, settings: TransferSettings):
        self.settings = settings

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        old, new = urlsplit(req.full_url).scheme, urlsplit(newurl).scheme.lower()
        if new not in ("http", "https") or (old == "https" and new != "https"):
            raise PermanentError(f"{req.full_url}: refused redirect to {newurl}")
        check_url(newurl, self.settings)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class HTTPTransfer(Transfer):
    schemes = ("http", "https")

    def upload(self, src: Path, url: str) -> None:
        raise PermanentError(f"{url}: stage-out over http is not supported")

    def _opener(self) -> urllib.request.OpenerDirector:
        ca_file = self.settings.ca_file
        try:
            context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise PermanentError(f"transfers.ca_file: {ca_file}: {exc}") from None
        return urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context), _Redirects(self.settings)
        )

    def download(self, url: str, dest: Path) -> None:
        name = posixpath.basename(unquote(urlsplit(url).path))
        if name in ("", ".", ".."):
            raise PermanentError(f"{url}: names a directory; http(s) stage-in takes one file")
        target = self.confine(dest) / name
        tmp = target.with_name(self.context.part_name(name))
        algorithm, digest, done = self.settings.checksum, hasher(self.settings.checksum), 0
        request = urllib.request.Request(url, headers={"User-Agent": "edgecelery"})  # noqa: S310
        try:
            paths.make_dirs(target.parent, url)
            with self._opener().open(request, timeout=self.settings.timeout) as response:
                if response.status != 200:
                    raise PermanentError(f"{url}: unexpected HTTP status {response.status}")
                length = response.headers.get("Content-Length")
                with os.fdopen(paths.open_write(tmp, url, truncate=True), "wb") as fout:
                    while block := response.read(CHUNK):
                        digest.update(block)
                        fout.write(block)
                        done += len(block)
                        if self.context.progress:
                            self.context.progress(done)
                    fout.flush()
                    os.fsync(fout.fileno())
            if length is not None and length.isdigit() and int(length) != done:
                raise TransientError(f"{url}: {done} bytes arrived of Content-Length {length}")
            if file_digest(tmp, algorithm) != digest.hexdigest():
                raise TransientError(f"{url}: {algorithm} checksum of the copy differs")
            os.replace(tmp, target)
        except urllib.error.HTTPError as exc:
            status = f"{url}: HTTP {exc.code} {exc.reason}"
            if exc.code >= 500 or exc.code in TRANSIENT_STATUS:
                raise TransientError(status) from None
            raise PermanentError(status) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLCertVerificationError):
                # The server's certificate is not one this site trusts: retrying cannot help
                # until an operator changes transfers.ca_file (or it is an impostor).
                raise PermanentError(f"{url}: certificate refused: {exc.reason}") from None
            raise TransientError(f"{url}: {exc.reason}") from None
        except ValueError as exc:  # unknown URL type, bad port...
            raise PermanentError(f"{url}: {exc}") from None
        except PermissionError as exc:
            raise PermanentError(f"{url}: permission denied ({exc.filename})") from None
        except (http.client.HTTPException, OSError) as exc:  # reset, time-out mid-body
            raise TransientError(f"{url}: {exc or type(exc).__name__}") from None
        finally:
            tmp.unlink(missing_ok=True)
