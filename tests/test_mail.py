"""Status mail: the rules (edgeceleryapp.mail_content), and sending through a real SMTP server
(aiosmtpd, STARTTLS, login): a burst of one job's events is one mail, a duplicate status
message none."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from edgeceleryapp import mail_content
from edgeceleryapp.db import session_scope
from edgeceleryapp.models import ArgoJob, JobEvent, SubJob
from edgeceleryapp.settings import reset_settings
from edgeceleryapp.state_store import move_argo
from edgeceleryapp.status_outbox import event_body
from tasks.mail import note_event, send_pending
from tests.smtpserver import Mailbox, smtp_server
from workflows.intake import submit_argo


def test_which_events_are_mailed() -> None:
    body = {"kind": "argo", "argo_job_id": 3, "event_id": 9, "to_state": "HISTORY"}
    assert mail_content.wanted(body, "ended")
    assert mail_content.wanted({**body, "to_state": "SUBMITTED_FAILED"}, "ended")
    assert mail_content.wanted({**body, "to_state": "KILLED"}, "ended")
    assert not mail_content.wanted({**body, "to_state": "SUBJOB_RUNNING"}, "ended")
    assert mail_content.wanted({**body, "to_state": "SUBJOB_RUNNING"}, "every")
    assert not mail_content.wanted({**body, "kind": "subjob"}, "every")
    assert not mail_content.wanted({**body, "kind": "intake", "argo_job_id": None}, "every")


def test_recipients_from_the_email_field() -> None:
    assert mail_content.recipients("jchilders@anl.gov,turam@anl.gov") == [
        "jchilders@anl.gov",
        "turam@anl.gov",
    ]
    assert mail_content.recipients(" a@b.org; a@b.org  c@d.org, not-an-address,") == [
        "a@b.org",
        "c@d.org",
    ]
    assert mail_content.recipients("") == []


@pytest.fixture
def mailbox(env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Mailbox:
    with smtp_server(tmp_path / "smtp") as box:
        for key, value in box.settings(on="every").items():
            monkeypatch.setenv(
                f"EDGECELERY_MAIL__{key.upper()}",
                str(value).lower() if isinstance(value, bool) else str(value),
            )
        reset_settings()
        yield box
    reset_settings()


def bodies(argo_id: int) -> list[dict]:
    with session_scope() as s:
        rows = s.execute(
            select(JobEvent, SubJob, ArgoJob)
            .outerjoin(SubJob, SubJob.id == JobEvent.subjob_id)
            .outerjoin(ArgoJob, ArgoJob.id == JobEvent.argo_job_id)
            .where(JobEvent.argo_job_id == argo_id)
            .order_by(JobEvent.id)
        ).all()
        return [event_body(e, sj, a) for e, sj, a in rows]


def job(email: str) -> int:
    return submit_argo(
        {
            "name": "gen",
            "email": email,
            "group_identifier": "g1",
            "subjobs": [{"name": "s", "site": "alpha", "application": "echo"}],
        },
        start=False,
    )


def test_a_burst_is_one_mail_and_a_duplicate_none(mailbox: Mailbox) -> None:
    argo_id = job("one@example.org, two@example.org")
    assert move_argo(argo_id, "CREATED", "STAGED_IN_FAILED", "input missing")
    burst = bodies(argo_id)
    noted = [note_event(b) for b in burst]
    # Every Argo-level change is recorded once (mail.on = "every"); subjob events are not.
    assert noted.count(argo_id) == 2 and noted.count(None) == len(burst) - 2
    assert [note_event(b) for b in burst] == [None] * len(burst)  # delivered again
    assert send_pending(argo_id)
    assert not send_pending(argo_id)
    assert len(mailbox.mails) == 1
    mail = mailbox.mails[0]
    assert mail["Subject"] == f"[edgecelery] argo job {argo_id} (gen): STAGED_IN_FAILED"
    assert mail["X-Envelope-To"] == "one@example.org, two@example.org"
    text = mail.get_payload()
    assert "-> CREATED" in text and "CREATED -> STAGED_IN_FAILED  (input missing)" in text


def test_no_address_no_mail(mailbox: Mailbox) -> None:
    argo_id = job("")
    assert move_argo(argo_id, "CREATED", "STAGED_IN_FAILED", "input missing")
    assert [note_event(b) for b in bodies(argo_id)] == [None] * len(bodies(argo_id))
    assert not send_pending(argo_id)
    assert mailbox.mails == []
