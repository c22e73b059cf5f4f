"""Sending one mail through the configured SMTP server: STARTTLS or implicit TLS with the
server's certificate checked (a private CA through ``mail.ca_file``), login when a user is set.
Network and server errors are transient (the caller retries); a refused login or sender is
permanent."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

from edgeceleryapp.errors import PermanentError, TransientError
from edgeceleryapp.settings import MailSettings


def _tls(settings: MailSettings) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)


def send(mail: EmailMessage, settings: MailSettings) -> None:
    host, port, timeout = settings.smtp_host, settings.smtp_port, settings.timeout
    try:
        if settings.security == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                host, port, timeout=timeout, context=_tls(settings)
            )
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
        with smtp:
            if settings.security == "starttls":
                smtp.starttls(context=_tls(settings))
            if settings.username:
                smtp.login(settings.username, settings.password)
            smtp.send_message(mail)
    except (smtplib.SMTPAuthenticationError, smtplib.SMTPSenderRefused) as exc:
        raise PermanentError(f"smtp {host}:{port}: {exc}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise TransientError(f"smtp {host}:{port}: {exc}") from None
