"""How every step task treats errors: transient ones retry with exponential back-off and
jitter, a bounded number of times; permanent ones (and exhausted retries) put the record in its
failure state with the reason, and stop the chain.

An unexpected exception is treated as transient: a bug or an outage must not leave a job
silently stuck in a running state, so after the last retry it fails with the error recorded.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from celery import Task

from edgeceleryapp import states
from edgeceleryapp.errors import Parked, PermanentError, TransientError
from edgeceleryapp.next_step import Step
from edgeceleryapp.settings import get_settings

log = logging.getLogger(__name__)


class StepTask(Task):
    acks_late = True
    reject_on_worker_lost = True
    max_retries = None  # bounded by settings.retry.max_retries in ``guarded``


class Stop(Exception):
    """The record failed, was killed or removed, or moved on without this step: end the chain
    quietly."""


class Busy(Stop):
    """Another execution holds the record's lease: end quietly; that one carries the chain
    on (edgeceleryapp/leases.py)."""


def should_run(step: Step, state: str, what: str) -> bool:
    """Whether a step is to run on a record at ``state``: False when it (or a later one)
    already happened, which is what makes every task safe to run twice; a record that failed
    or was killed ends the chain; one not yet at the step's start is asked again later."""
    ready = states.readiness(step.machine, step.start, step.reaches, state)
    if ready == states.Readiness.STOPPED:
        raise Stop
    if ready == states.Readiness.WAITING:
        raise TransientError(f"{what} is {state}, not yet {step.start}")
    return ready == states.Readiness.READY


def backoff(retries: int) -> float:
    """Exponential back-off with 'equal jitter': half fixed, half random."""
    policy = get_settings().retry
    ceiling = min(policy.backoff_max, policy.backoff_base * (2**retries))
    return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - not cryptographic


def stop_chain(task: Task) -> None:
    """Drop the rest of the chain: the trace reads ``request.chain`` after the task returns."""
    task.request.chain = None
    task.request.callbacks = None


def step_word(task_name: str) -> str:
    """A task's step as users say it: ``site.stage_in`` is "stage-in"."""
    return task_name.rpartition(".")[2].replace("_", "-")


def retry_note(task_name: str, countdown: float, retry: int, of: int, error: object) -> str:
    """Why the record waits, for its ``state_message``: "retrying stage-in in 40 s (attempt
    3 of 8): connection refused". Without it a job sat in its state with an empty message
    while only the worker's log showed the retries."""
    return (
        f"retrying {step_word(task_name)} in {round(countdown)} s "
        f"(attempt {retry} of {of}): {error}"
    )


def guarded(
    task: Task,
    body: Callable[[], None],
    fail: Callable[[str], None],
    due: Callable[[float, str], None] | None = None,
) -> None:
    """Run one step body under the retry policy; ``fail`` records the failure state, ``due``
    tells the record when its retry is due (the reconciler waits for it) and why it waits."""
    try:
        body()
        return
    except Busy as exc:
        log.info("%s %s: %s", task.name, task.request.args, exc)
        stop_chain(task)
        return
    except Stop:
        stop_chain(task)
        return
    except Parked as exc:
        log.info("%s %s: waiting to be admitted: %s", task.name, task.request.args, exc)
        stop_chain(task)
        return
    except PermanentError as exc:
        log.warning("%s %s: permanent failure: %s", task.name, task.request.args, exc)
        fail(str(exc))
        stop_chain(task)
        return
    except TransientError as exc:
        error: Exception = exc
    except Exception as exc:
        log.exception("%s %s: unexpected error", task.name, task.request.args)
        error = exc
    retries = task.request.retries
    max_retries = get_settings().retry.max_retries
    if retries >= max_retries:
        fail(f"gave up after {retries} retries: {error}")
        stop_chain(task)
        return
    countdown = backoff(retries)
    if due is not None:
        due(countdown, retry_note(task.name, countdown, retries + 1, max_retries, error))
    raise task.retry(exc=error, countdown=countdown)
