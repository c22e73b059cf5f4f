"""The Celery application. Settings come from ``celeryconfig``, which reads ours."""

from typing import Any

from celery import Celery
from celery.signals import worker_process_shutdown, worker_shutdown

app = Celery("edgecelery")
app.config_from_object("celeryconfig")


@worker_shutdown.connect
@worker_process_shutdown.connect
def _write_pending_marks(**_: Any) -> None:
    """A stopping worker marks what it sent, so that nothing goes out twice needlessly."""
    from edgeceleryapp.status_outbox import write_pending_marks

    write_pending_marks()


def _install_intake() -> None:
    """``--intake`` makes a worker consume the intake queue, ``--mail`` the status messages
    to mail about (the argo worker passes both)."""
    from click import Option

    from workflows.intake_consumer import IntakeConsumer
    from workflows.mail_consumer import MailConsumer

    app.user_options["worker"].add(
        Option(["--intake"], is_flag=True, default=False, help="Consume the intake queue.")
    )
    app.user_options["worker"].add(
        Option(["--mail"], is_flag=True, default=False, help="Send status mail (mail.enabled).")
    )
    app.steps["consumer"].add(IntakeConsumer)
    app.steps["consumer"].add(MailConsumer)


_install_intake()
