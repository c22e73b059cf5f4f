"""The subjob steps a site worker runs (queue ``site.<name>``): stage in, preprocess, submit,
then (after the poller saw the batch job end) postprocess and stage out.

``execute`` is the whole idempotent step; the Celery tasks wrap it in the retry policy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Row

from backends.schedulers import scheduler_for
from edgeceleryapp import leases, next_step, site_monitor, state_store, states
from edgeceleryapp.batch_names import batch_job_name
from edgeceleryapp.celery_app import app
from edgeceleryapp.models import utcnow
from edgeceleryapp.state_store import load_subjob, move_subjob
from tasks import pilots, site_steps
from tasks.retry_policy import StepTask, guarded
from tasks.step_runner import run_once
from workflows import children
from workflows.schemas import BalsamJobMessage

log = logging.getLogger(__name__)

WORK: dict[str, Callable[..., dict]] = {
    "stage_in": site_steps.stage_in,
    "preprocess": site_steps.preprocess,
    "submit": site_steps.submit,
    "postprocess": site_steps.postprocess,
    "stage_out": site_steps.stage_out,
}


def execute(step_name: str, subjob_id: int, token: str = "") -> None:
    """Run one step once (``tasks.step_runner``); return at once if it already happened."""
    step = next_step.SITE_STEPS[f"site.{step_name}"]
    work = WORK[step_name]

    def state_now() -> str | None:
        current = load_subjob(subjob_id)
        return current.state if current is not None else None

    def run(subjob: Row) -> tuple[Row, dict, list[BalsamJobMessage]]:
        if step_name == "submit":
            if site_steps.site_of(subjob).pilots.enabled:  # the tick assigns it to a pilot
                return subjob, pilots.wait_for_pilot(subjob), []
            return subjob, work(subjob, token), []
        values = work(subjob)
        if step_name != "postprocess":
            return subjob, values, []
        return subjob, values, children.spawned(subjob, site_steps.workdir_of(subjob))

    ran, result = run_once(step, leases.SUBJOBS, subjob_id, state_now, run)
    if not ran:
        return
    subjob, values, spawned = result
    path = states.walk(states.BALSAM, step.start, step.reaches)
    note = f"batch job {values['batch_job_id']}" if "batch_job_id" in values else ""
    if spawned:
        names = ", ".join(c.name for c in spawned[:10]) + (", ..." if len(spawned) > 10 else "")
        note = f"spawned {len(spawned)} children: {names}"
    then = children.adder(subjob, spawned) if spawned else None
    moved = move_subjob(subjob_id, step.start, path, note, then=then, **values)
    if not moved and step_name == "submit":
        site_steps.cancel_if_untracked(subjob, values["batch_job_id"])


def fail(step_name: str, subjob_id: int, reason: str) -> None:
    step = next_step.SITE_STEPS[f"site.{step_name}"]
    move_subjob(subjob_id, step.start, [step.fails_to], reason)
    site_monitor.step_error(subjob_id, f"subjob {subjob_id}: {step_name} failed: {reason}")


def retrying(step_name: str, subjob_id: int, seconds: float, note: str) -> None:
    """The subjob waits for its step's retry: say why on the record (and as the site's last
    error); the reconciler leaves it alone until the retry is due."""
    step = next_step.SITE_STEPS[f"site.{step_name}"]
    due_at = utcnow() + timedelta(seconds=seconds)
    state_store.note(leases.SUBJOBS, subjob_id, step.start, note, due_at)
    site_monitor.step_error(subjob_id, f"subjob {subjob_id}: {note}")


def _task(step_name: str) -> Callable:
    def run(self: StepTask, subjob_id: int) -> None:
        guarded(
            self,
            lambda: execute(step_name, subjob_id, token=self.request.id or ""),
            lambda reason: fail(step_name, subjob_id, reason),
            lambda seconds, note: retrying(step_name, subjob_id, seconds, note),
        )

    run.__name__ = step_name
    run.__doc__ = f"Subjob step {step_name} (the HUST'17 paper, 2.1.1), at the subjob's site."
    return app.task(bind=True, base=StepTask, name=f"site.{step_name}")(run)


stage_in = _task("stage_in")
preprocess = _task("preprocess")
submit = _task("submit")
postprocess = _task("postprocess")
stage_out = _task("stage_out")


@app.task(bind=True, base=StepTask, name="site.cancel")
def cancel(self: StepTask, subjob_id: int) -> None:
    """Remove a killed subjob's batch job from its scheduler (run at the site). A subjob
    killed while it was being submitted has no batch job recorded, but the scheduler may have
    one under the attempt's name (its submit's worker died before recording it): look it up
    by that name, as a re-run of the submit would; one it does not show yet is forbidden to
    start (``Scheduler.forbid``)."""

    def body() -> None:
        subjob = load_subjob(subjob_id)
        if subjob is None:
            return
        if subjob.pilot_id is not None:  # it runs in a pilot, not in a batch job of its own
            pilots.cancel_run(subjob)
            return
        scheduler = scheduler_for(site_steps.site_of(subjob))
        name = batch_job_name(subjob)
        batch_id = subjob.batch_job_id or scheduler.find(name)
        if batch_id:
            scheduler.cancel(batch_id)
        else:  # not seen (yet): a run accepted but not started must never start
            scheduler.forbid(name)

    guarded(
        self, body, lambda reason: log.warning("cancel of subjob %s failed: %s", subjob_id, reason)
    )
