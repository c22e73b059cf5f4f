"""Celery tasks: the six subjob steps at a site (queue ``site.<name>``) and the Argo steps
(queue ``argo``). Every task is idempotent: it reads the record first and returns at once if
its step already happened."""
