"""Celery settings: queues, routes, acknowledgement, serialisation, the beat schedule.

At-least-once everywhere: a task is acknowledged after it ran (acks_late), and a task whose
worker died is delivered again (reject_on_worker_lost; for Redis, after visibility_timeout).
Every task is written to be safe to run twice. JSON only: no pickle ever crosses the broker.
"""

from edgeceleryapp import broker_connection as _broker_connection
from edgeceleryapp.settings import get_settings

_settings = get_settings()

# Celery talks to the broker through kombu's own transport for the URL's scheme, so that
# `celery inspect`, Flower and every other Celery tool see a transport they know (our faster
# Redis channel serves only our own publishers: edgeceleryapp/brokertransport.py).
broker_url = _settings.broker_url
# TLS (verified, see [broker]) and the login by client certificate on RabbitMQ.
broker_use_ssl = _broker_connection.ssl_options(_settings)
broker_login_method = _broker_connection.login_method(_settings)
broker_connection_retry_on_startup = True
# kombu's Redis transport looks for unacknowledged messages to deliver again only every
# interval * throttle seconds (100 s by default); keep that well under the visibility timeout.
broker_transport_options = {
    "visibility_timeout": _settings.visibility_timeout,
    "unacked_restore_interval": max(1, min(10, int(_settings.visibility_timeout / 2))),
    "unacked_restore_throttle": 1,
}

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
event_serializer = "json"
task_ignore_result = True

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
worker_concurrency = _settings.worker_concurrency

task_default_queue = "argo"
task_routes = {"argo.*": {"queue": "argo"}}

# Task events cost every task a broker publish per event (a fifth of a site worker's CPU in
# bench/deep_queue.py's drain), so they are off, as in Celery itself; Flower (and
# `celery control enable_events`) switches them on in the running workers while it watches.
# Worker events (heartbeats, online/offline) are always sent.
worker_send_task_events = False
task_send_sent_event = False

# Beat (in the argo worker) sweeps Argo jobs and re-sends status messages that did not go
# out. It sends no poll ticks: each site worker polls (and sweeps its own subjobs) on its own
# clock (tasks/site_clock.py), so a site goes on finishing its subjobs while the argo worker is
# down, and ticks fill no task history.
beat_schedule = {
    # The reconciler's sweep of Argo jobs (sites sweep their own subjobs in their tick).
    "reconcile-argo": {
        "task": "argo.reconcile",
        "schedule": _settings.redrive_after / 4,
        "options": {"queue": "argo", "expires": _settings.redrive_after / 4},
    },
    "resend-status": {
        "task": "argo.resend_status",
        "schedule": _settings.status_resend_after,
        "options": {"queue": "argo", "expires": _settings.status_resend_after},
    },
}
