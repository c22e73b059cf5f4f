"""The Celery chains that carry a job, built by task name and routed per site.

    start_argo:     argo.stage_in -> argo.advance
    start_subjob:   site.stage_in -> site.preprocess -> site.submit        (then parked)
    resume_subjob:  site.postprocess -> site.stage_out [-> argo.advance]   (sent by the poller)
    finish_argo:    argo.stage_out -> argo.finish

A subjob's chain is parked while its batch job waits: no message exists for it until the
site's poller sees the job end, so 10,000 waiting subjobs cost no broker traffic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from celery import chain
from celery.canvas import Signature, _chain
from kombu import Producer

from edgeceleryapp.brokertransport import batch_producer
from edgeceleryapp.celery import app
from edgeceleryapp.settings import get_settings

if TYPE_CHECKING:
    from edgeceleryapp.models import SubJob


class SubjobRef(Protocol):
    """What a chain needs of a subjob: a SubJob record, or a row of these columns (the poller
    reads rows, not records)."""

    id: int
    site: str
    argo_job_id: int | None


def send(signature: Signature, producer: Producer | None = None) -> None:
    """Send a step or a chain through our own publisher (``edgeceleryapp.brokertransport``:
    one Redis client reused, and inside ``batch_producer`` many chains in one round trip).

    Celery's chain does not pass a producer on to its first task, so a chain is sent as
    Celery sends one: its first task, carrying the rest as a stack (the next task last).
    """
    if producer is None:
        with batch_producer(get_settings().broker_url) as own:
            send(signature, own)
        return
    if isinstance(signature, _chain):
        first, *rest = signature.tasks
        first.apply_async(producer=producer, chain=rest[::-1])
    else:
        signature.apply_async(producer=producer)


def site_queue(site: str) -> str:
    return f"site.{site}"


def _site_step(step: str, subjob: SubjobRef) -> Signature:
    return app.signature(
        f"site.{step}",
        args=(subjob.id,),
        queue=site_queue(subjob.site),
        # What Flower shows: which subjob, which site, which Argo job.
        argsrepr=f"(subjob={subjob.id}, site={subjob.site}, argo={subjob.argo_job_id})",
        immutable=True,
    )


def _argo_step(step: str, argo_id: int) -> Signature:
    return app.signature(
        f"argo.{step}", args=(argo_id,), queue="argo", argsrepr=f"(argo={argo_id})", immutable=True
    )


def start_argo(argo_id: int) -> Signature:
    return chain(_argo_step("stage_in", argo_id), _argo_step("advance", argo_id))


def start_subjob(subjob: SubjobRef) -> Signature:
    return chain(*(_site_step(s, subjob) for s in ("stage_in", "preprocess", "submit")))


def submit_again(subjob: SubjobRef) -> Signature:
    """A new attempt after a resource-side failure; the poller resumes it when it ends."""
    return _site_step("submit", subjob)


def cancel_batch(subjob: SubjobRef) -> Signature:
    """Ask the site's scheduler to remove a killed subjob's batch job."""
    return _site_step("cancel", subjob)


def resume_subjob(subjob: SubjobRef) -> Signature:
    steps = [_site_step("postprocess", subjob), _site_step("stage_out", subjob)]
    if subjob.argo_job_id is not None:
        steps.append(_argo_step("advance", subjob.argo_job_id))
    return chain(*steps)


def finish_argo(argo_id: int) -> Signature:
    return chain(_argo_step("stage_out", argo_id), _argo_step("finish", argo_id))


def retry_subjob_from(subjob: SubJob) -> Signature:
    """The chain that takes a subjob on from the state a retry put it in."""
    if subjob.state in ("EXECUTION_FINISHED", "POSTPROCESSED"):
        return resume_subjob(subjob)
    return start_subjob(subjob)


def advance_argo(argo_id: int) -> Signature:
    return _argo_step("advance", argo_id)
