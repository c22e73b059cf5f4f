"""The Celery app as a worker runs it (``celery -A edgeceleryapp`` and ``edgecelery worker``
load this module): ``edgeceleryapp.celery_app``'s app, with every task module imported, the
intake and mail consumers installed, the site clock that polls a site worker's sites, and
the job sources the argo worker polls."""

from typing import Any

from celery.signals import worker_process_shutdown, worker_shutdown
from click import Option

import tasks.argo
import tasks.mail
import tasks.site
from edgeceleryapp.broker_permissions import SiteLeavesSharedUndeclared
from edgeceleryapp.celery_app import app
from edgeceleryapp.status_outbox import CentralDeclaresStatusExchange, write_pending_marks
from tasks.site_clock import SiteClockStep
from workflows.intake_consumer import IntakeConsumer
from workflows.mail_consumer import MailConsumer
from workflows.sources.runner import SourceRunnerStep

TASK_MODULES = (tasks.argo, tasks.mail, tasks.site)


@worker_shutdown.connect
@worker_process_shutdown.connect
def _write_pending_marks(**_: Any) -> None:
    """A stopping worker marks what it sent, so that nothing goes out twice needlessly."""
    write_pending_marks()


# ``--intake`` makes a worker consume the intake queue, ``--mail`` the status messages to mail
# about (the argo worker passes both).
app.user_options["worker"].add(
    Option(["--intake"], is_flag=True, default=False, help="Consume the intake queue.")
)
app.user_options["worker"].add(
    Option(["--mail"], is_flag=True, default=False, help="Send status mail (mail.enabled).")
)
app.steps["consumer"].add(IntakeConsumer)
app.steps["consumer"].add(MailConsumer)
app.steps["worker"].add(SiteClockStep)
app.steps["worker"].add(SourceRunnerStep)
app.steps["worker"].add(SiteLeavesSharedUndeclared)
app.steps["consumer"].add(CentralDeclaresStatusExchange)

__all__ = ["TASK_MODULES", "app"]
