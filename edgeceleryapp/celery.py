"""The Celery application. Settings come from ``celeryconfig``, which reads ours."""

from celery import Celery

app = Celery("edgecelery")
app.config_from_object("celeryconfig")
