"""What status mail to send: which events, to whom, and the text. No I/O here (the sending is
``edgeceleryapp.mail_smtp``, the bookkeeping ``tasks.mail``), so the rules are tested alone.

A mail goes to the Argo job's ``email`` list (the HUST'17 paper, 2.2.1: comma-separated addresses).
By default only when the job stops (HISTORY, KILLED, or a failure state: the job waits for a
retry); with ``mail.on = "every"`` for every change of the Argo job. Events of one job that
come within ``mail.batch_window`` seconds of the first go out together as one mail.
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from edgeceleryapp import states

_ADDRESS = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+$")


def wanted(body: dict[str, Any], on: str) -> bool:
    """Whether a status message is one to mail about: an Argo job's own change, and (unless
    every change is mailed) one that stops the job."""
    if body.get("kind") != "argo" or not isinstance(body.get("argo_job_id"), int):
        return False
    if not isinstance(body.get("event_id"), int):
        return False
    return on == "every" or states.has_stopped(states.ARGO, str(body.get("to_state", "")))


def recipients(email_field: str) -> list[str]:
    """The addresses of a job's ``email`` field (commas, semicolons or spaces between them);
    anything that is not an address is left out."""
    seen: list[str] = []
    for part in re.split(r"[,;\s]+", email_field or ""):
        if _ADDRESS.match(part) and part not in seen:
            seen.append(part)
    return seen


def compose(job: dict[str, Any], events: list[dict[str, Any]], sender: str) -> EmailMessage:
    """One mail about ``events`` (oldest first) of the Argo job ``job``."""
    last = events[-1]
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = ", ".join(recipients(job["email"]))
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = make_msgid(domain="edgecelery")
    name = job.get("name") or "argo job"
    mail["Subject"] = f"[edgecelery] argo job {job['id']} ({name}): {last['to_state']}"
    lines = [
        f"Argo job {job['id']} ({name}) is now {job['state']}.",
        f"group_identifier: {job.get('group_identifier') or '-'}",
        f"output_url:       {job.get('output_url') or '-'}",
        "",
        "Changes:",
    ]
    for e in events:
        note = f"  ({e['message']})" if e.get("message") else ""
        lines.append(f"  {e['time']}  {e['from_state'] or '-'} -> {e['to_state']}{note}")
    mail.set_content("\n".join(lines) + "\n")
    return mail
