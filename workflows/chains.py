"""The Celery chains that carry a job: what ``edgeceleryapp.next_step`` says is owed, as
signatures routed per site (``site.<name>``) or to ``argo`` (on RabbitMQ through each queue's
own exchange: ``broker_permissions.route``).

The runs a chain carries (``next_step.RUNS``):

    argo.stage_in -> argo.advance
    site.stage_in -> site.preprocess -> site.submit                    (then parked)
    site.postprocess -> site.stage_out [-> argo.advance]               (sent by the poller,
                                                                        less the steps with
                                                                        nothing to do)
    argo.stage_out -> argo.finish

A subjob's chain is parked while its batch job waits: no message exists for it until the
site's poller sees the job end, so 10,000 waiting subjobs cost no broker traffic.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from celery import chain
from celery.canvas import Signature, _chain
from kombu import Producer

from edgeceleryapp import next_step
from edgeceleryapp.broker_permissions import route
from edgeceleryapp.brokertransport import batch_producer
from edgeceleryapp.celery_app import app
from edgeceleryapp.next_step import Owed
from edgeceleryapp.settings import get_settings


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


class _Ref(NamedTuple):
    id: int
    site: str
    argo_job_id: int | None


def _site_step(step: str, subjob: SubjobRef) -> Signature:
    return app.signature(
        step,
        args=(subjob.id,),
        **route(site_queue(subjob.site)),
        # What Flower shows: which subjob, which site, which Argo job.
        argsrepr=f"(subjob={subjob.id}, site={subjob.site}, argo={subjob.argo_job_id})",
        immutable=True,
    )


def _argo_step(step: str, argo_id: int) -> Signature:
    return app.signature(
        step, args=(argo_id,), **route("argo"), argsrepr=f"(argo={argo_id})", immutable=True
    )


def _signature(step: str, owed: Owed) -> Signature:
    if step.startswith("site."):
        assert owed.subjob_id is not None and owed.site is not None
        return _site_step(step, _Ref(owed.subjob_id, owed.site, owed.argo_id))
    assert owed.argo_id is not None
    return _argo_step(step, owed.argo_id)


def chain_for(owed: Owed) -> Signature:
    """The owed step and the steps its chain carries after it (a STEP answer only)."""
    if owed.verdict != next_step.STEP:
        raise ValueError(f"nothing to send: the record is {owed.verdict} ({owed.reason})")
    signatures = [_signature(step, owed) for step in owed.steps]
    return signatures[0] if len(signatures) == 1 else chain(*signatures)


def cancel_batch(subjob: SubjobRef) -> Signature:
    """Ask the site's scheduler to remove a killed subjob's batch job: the one it recorded, or,
    for a subjob killed while it was being submitted, the one named after its attempt."""
    return _site_step("site.cancel", subjob)
