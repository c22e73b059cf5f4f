"""The Celery application, configured and nothing more: tasks and chains import it, and it
imports none of them. Settings come from ``celeryconfig``, which reads ours.

A worker loads ``edgeceleryapp.celery`` instead (what ``celery -A edgeceleryapp`` finds): the
same app with the tasks imported and the intake and mail consumers installed.
"""

from celery import Celery

app = Celery("edgecelery")
app.config_from_object("celeryconfig")
