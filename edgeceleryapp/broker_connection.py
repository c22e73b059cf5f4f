"""How every process reaches the broker: the TLS options and login built from ``[broker]``,
in the form each client wants, so that Celery, our publishers and consumers, ``watch`` and
Flower all connect the same way and none of them falls back to plaintext or to an unverified
certificate.

kombu takes TLS options as ``Connection(ssl=...)``: for Redis the keyword arguments of
redis-py's ``SSLConnection``, for RabbitMQ those of py-amqp's ``SSLTransport``. kombu's own
default for a ``rediss://`` URL without options is *no verification*; here a TLS URL always
gets options, and they verify unless the settings say otherwise.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

from kombu import Connection

from edgeceleryapp.errors import ConfigurationError
from edgeceleryapp.settings import Settings, get_settings


def scheme_of(url: str) -> str:
    return url.partition("://")[0].lower()


def for_url(url: str, settings: Settings | None = None) -> Settings:
    """The settings with ``broker_url`` replaced, its ``[broker]`` table kept: a process whose
    own broker differs (the test process uses memory://) reaching the deployment's."""
    settings = settings or get_settings()
    if url == settings.broker_url:
        return settings
    return settings.model_copy(update={"broker_url": url})


def ssl_options(settings: Settings) -> dict[str, Any] | None:
    """``Connection(ssl=...)`` for the configured broker; None for a plaintext one."""
    url, broker = settings.broker_url, settings.broker
    scheme = scheme_of(url)
    verify = broker.verify
    check_hostname = verify and broker.check_hostname
    if scheme == "rediss":
        options: dict[str, Any] = {
            "ssl_cert_reqs": ssl.CERT_REQUIRED if verify else ssl.CERT_NONE,
            "ssl_check_hostname": check_hostname,
        }
        if broker.ca_file:
            options["ssl_ca_certs"] = str(broker.ca_file)
        if broker.cert_file:
            options["ssl_certfile"] = str(broker.cert_file)
            options["ssl_keyfile"] = str(broker.key_file or broker.cert_file)
        return options
    if scheme == "amqps":
        options = {"cert_reqs": ssl.CERT_REQUIRED if verify else ssl.CERT_NONE}
        if check_hostname:
            # py-amqp checks the certificate's name against server_hostname when given.
            options["server_hostname"] = urlsplit(url).hostname
        if broker.ca_file:
            options["ca_certs"] = str(broker.ca_file)
        elif verify:
            options["ca_certs"] = ssl.get_default_verify_paths().cafile
        if broker.cert_file:
            options["certfile"] = str(broker.cert_file)
            options["keyfile"] = str(broker.key_file or broker.cert_file)
        return options
    return None


def login_method(settings: Settings) -> str | None:
    """SASL EXTERNAL for a login by client certificate; else the transport's default."""
    return "EXTERNAL" if settings.broker.login == "certificate" else None


def connection_options(settings: Settings | None = None) -> dict[str, Any]:
    """Keyword arguments for ``kombu.Connection`` beyond the URL."""
    settings = settings or get_settings()
    options: dict[str, Any] = {"ssl": ssl_options(settings) or False}
    if method := login_method(settings):
        options["login_method"] = method
    return options


def connect(settings: Settings | None = None, **extra: Any) -> Connection:
    """A kombu connection (not yet opened) to the configured broker."""
    settings = settings or get_settings()
    return Connection(settings.broker_url, **connection_options(settings), **extra)


def _causes(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    node: BaseException | None = exc
    while node is not None and node not in seen:
        seen.append(node)
        node = node.__cause__ or node.__context__
    return seen


def explain(exc: BaseException, settings: Settings) -> str | None:
    """What a failed TLS handshake says about the settings, naming the one to look at; None
    when the failure is not about TLS (the broker is down, say)."""
    causes = _causes(exc)
    text = " | ".join(str(e) for e in causes)
    detail = next((str(e) for e in causes if isinstance(e, ssl.SSLError)), str(exc))
    host = urlsplit(settings.broker_url).hostname
    if "certificate verify failed" in text or "CERTIFICATE_VERIFY_FAILED" in text:
        if "hostname mismatch" in text or "IP address mismatch" in text:
            return (
                f"broker_url: the broker's certificate does not name {host} (broker.check_hostname)"
            )
        return (
            f"broker.ca_file: the broker's certificate at {host} could not be verified "
            f"against {settings.broker.ca_file or 'the system CA bundle'} ({detail})"
        )
    if any(isinstance(e, ssl.SSLError) for e in causes) or "certificate required" in text:
        if not settings.broker.cert_file:
            return (
                f"broker.cert_file: the broker at {host} refused the TLS connection; it "
                f"may require a client certificate ({detail})"
            )
        return (
            f"broker.cert_file: the broker at {host} refused the TLS connection with "
            f"{settings.broker.cert_file} ({detail})"
        )
    return None


def check(settings: Settings | None = None, timeout: float = 10.0) -> None:
    """Connect once, so that a broker that cannot be verified (or refuses us) stops the
    command at once with a reason, instead of a worker retrying forever. A broker that is
    merely down is no error here: the worker waits for it as Celery does."""
    settings = settings or get_settings()
    if scheme_of(settings.broker_url) == "memory":
        return
    conn = connect(settings, connect_timeout=timeout)
    try:
        conn.ensure_connection(max_retries=1, timeout=timeout)
        if scheme_of(settings.broker_url).startswith("redis"):
            # redis-py connects lazily: ask for something, so the handshake happens now.
            with conn.channel() as channel:
                channel.client.ping()
    except Exception as exc:
        reason = explain(exc, settings)
        if reason is not None:
            raise ConfigurationError(reason) from None
    finally:
        conn.release()
