"""The plain-Celery ceiling: no-op tasks with the service's Celery settings.

``bench/throughput.py`` chains these in the shape of an Argo job (the same number of tasks,
routed to the same queues in the same order) and runs them through the same broker, in worker
processes with the same concurrency, so the ratio of the two rates is what our own work costs.

    celery -A bench.ceiling_app worker -Q argo ...
"""

from __future__ import annotations

from celery import Celery

import celeryconfig

# Every setting of the service's workers except what names its own tasks and schedule.
_SKIP = {"imports", "beat_schedule", "task_routes"}

app = Celery("edgecelery-ceiling")
app.config_from_object(
    {
        key: getattr(celeryconfig, key)
        for key in dir(celeryconfig)
        if not key.startswith("_") and key.islower() and key not in _SKIP
    }
)


@app.task(name="ceiling.noop", acks_late=True, reject_on_worker_lost=True)
def noop(*_args: object) -> None:
    """Does nothing: what is left is Celery's own cost per task."""


@app.task(name="ceiling.done", acks_late=True, reject_on_worker_lost=True)
def done(*_args: object) -> None:
    """The last link of a chain: counts finished chains in Redis for the benchmark."""
    with app.pool.acquire(block=True) as conn:
        conn.default_channel.client.incr("ceiling:done")
