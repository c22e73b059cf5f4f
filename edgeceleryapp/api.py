"""The Python API, for production systems that submit from code rather than the command line.

    from edgeceleryapp import api
    argo_id = api.submit_argo_job(message)      # dict, JSON text or bytes
    api.argo_job(argo_id)["state"]              # "SUBJOB_RUNNING", ..., "HISTORY"

Settings come from ``$EDGECELERY_CONFIG`` as for the command line. Invalid messages raise
``ValidationFailed`` with every bad field in ``.errors``; nothing is stored then.
"""

from __future__ import annotations

from typing import Any

from edgeceleryapp import job_control, job_views
from edgeceleryapp.errors import ValidationFailed
from workflows.intake import submit_argo, submit_balsam


def submit_argo_job(message: dict[str, Any] | str | bytes) -> int:
    """Validate, store and start an Argo job (the HUST'17 paper, 2.2.1); returns its id."""
    return submit_argo(message)


def submit_balsam_job(message: dict[str, Any] | str | bytes) -> int:
    """Validate, store and start a Balsam-only job (the HUST'17 paper, 2.1.1); returns its id."""
    return submit_balsam(message)


def argo_job(argo_id: int) -> dict[str, Any]:
    """The Argo job with its subjobs and its timeline of state changes."""
    return job_views.show_argo(argo_id)


def retry_argo_job(argo_id: int) -> str:
    """Run a failed Argo job again from its failed step; returns the state it restarts from."""
    return job_control.retry_argo(argo_id)


__all__ = ["ValidationFailed", "argo_job", "retry_argo_job", "submit_argo_job", "submit_balsam_job"]
