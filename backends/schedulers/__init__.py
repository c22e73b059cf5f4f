"""Batch scheduler plug-ins, picked by the site's ``scheduler`` setting."""

from __future__ import annotations

from backends.runners import runner_for
from backends.schedulers.base import BatchRequest, BatchStatus, Scheduler
from backends.schedulers.cobalt import CobaltScheduler
from backends.schedulers.condor import CondorScheduler
from backends.schedulers.local import LocalScheduler
from backends.schedulers.lsf import LSFScheduler
from backends.schedulers.pbs import PBSProScheduler, TorqueScheduler
from backends.schedulers.sge import SGEScheduler
from backends.schedulers.slurm import SlurmScheduler
from edgeceleryapp.errors import ConfigurationError
from edgeceleryapp.settings import SiteSettings

SCHEDULERS: dict[str, type[Scheduler]] = {
    "local": LocalScheduler,
    "slurm": SlurmScheduler,
    "pbs": PBSProScheduler,
    "torque": TorqueScheduler,
    "cobalt": CobaltScheduler,
    "condor": CondorScheduler,
    "lsf": LSFScheduler,
    "sge": SGEScheduler,
}


def scheduler_for(site: SiteSettings) -> Scheduler:
    try:
        cls = SCHEDULERS[site.scheduler]
    except KeyError:
        raise ConfigurationError(
            f"scheduler: unknown scheduler {site.scheduler!r} "
            f"(known: {', '.join(sorted(SCHEDULERS))})"
        ) from None
    return cls(site, runner_for(site))


__all__ = ["SCHEDULERS", "BatchRequest", "BatchStatus", "Scheduler", "scheduler_for"]
