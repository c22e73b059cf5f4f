"""Site choice by availability: the rule (pure), the candidate sites a message may name, and
the hand-off recording the choice once (SQLite, no workers)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from backends.backfill import Window
from edgeceleryapp import applications, job_control, site_handoff
from edgeceleryapp.db import session_scope
from edgeceleryapp.errors import ValidationFailed
from edgeceleryapp.models import JobEvent, SiteMonitor, SubJob, utcnow
from edgeceleryapp.next_step import Record, for_subjob
from edgeceleryapp.settings import get_settings
from edgeceleryapp.site_choice import Candidate, best_window, choose
from edgeceleryapp.site_monitor import backfill_seen
from edgeceleryapp.state_store import move_subjob
from tests.helpers import argo_message, count, subjob
from workflows.intake import submit_argo, submit_balsam


def ready(site: str, free: int | None = 5, **fields) -> Candidate:
    return Candidate(site, True, True, False, free, **fields)


def test_with_one_breaker_open_and_one_queue_full_the_ready_site_is_chosen():
    choice = choose(
        [
            Candidate("a", True, True, True, 5),
            Candidate("b", True, True, False, 0, queued=10, limit=10),
            ready("c", free=1),
        ]
    )
    assert choice.site == "c"
    assert choice.reason.startswith("c: the best candidate that can take it now")
    assert "a: breaker open" in choice.reason
    assert "b: queue full (10 of 10 queued)" in choice.reason


def test_with_none_ready_a_full_queue_beats_an_open_breaker_and_the_reason_says_it_waits():
    choice = choose(
        [
            Candidate("a", True, True, True, 5),
            Candidate("b", True, True, False, 0, queued=10, limit=10, waiting=3),
        ]
    )
    assert choice.site == "b"
    assert "no candidate can take it now; it waits there (queue full)" in choice.reason
    assert "3 waiting for admission" in choice.reason


def test_a_site_without_a_worker_comes_last():
    choice = choose([Candidate("a", True, False, False, None), Candidate("b", True, True, True, 0)])
    assert choice.site == "b"
    assert "a: no worker alive" in choice.reason


def test_an_unregistered_site_is_never_chosen_even_when_ready():
    choice = choose([Candidate("a", False, True, False, None), ready("b")])
    assert choice.site == "b"
    assert "a: application not registered there" in choice.reason


def test_when_no_candidate_registers_the_application_the_first_is_kept_and_said():
    choice = choose([Candidate("a", False, True, False, 1), Candidate("b", False, True, False, 1)])
    assert choice.site == "a"
    assert "no candidate registers the application" in choice.reason


def test_among_ready_sites_more_free_slots_win_and_no_limit_counts_most():
    assert choose([ready("a", free=2), ready("b", free=7)]).site == "b"
    assert choose([ready("a", free=7), ready("b", free=None)]).site == "b"


def test_ties_go_to_the_earlier_candidate():
    assert choose([ready("a"), ready("b")]).site == "a"
    assert choose([ready("b"), ready("a")]).site == "b"


def test_fewer_waiting_for_admission_breaks_a_tie_in_free_slots():
    assert choose([ready("a", waiting=4), ready("b", waiting=1)]).site == "b"


def test_a_backfill_window_that_fits_wins_over_more_free_slots():
    small = Window(2, 600)
    big = Window(8, 3600)
    candidates = [ready("a", free=50, window=small), ready("b", free=1, window=big)]
    choice = choose(candidates, nodes=4, wall_seconds=1800)
    assert choice.site == "b"
    assert choice.reason.startswith("b: its idle nodes fit the subjob")
    # Too long for b's window: no window fits, so free slots decide.
    assert choose(candidates, nodes=4, wall_seconds=7200).site == "a"


def test_no_window_is_no_information():
    assert choose([ready("a", free=3), ready("b", free=2, window=None)]).site == "a"


def test_the_window_that_speaks_for_a_site_is_the_smallest_that_fits_else_the_widest():
    one, four, wide_short = Window(1, 7200, "a"), Window(4, None, "b"), Window(16, 300, "c")
    assert best_window([four, one, wide_short], nodes=1, wall_seconds=3600) == one
    assert best_window([four, one, wide_short], nodes=2, wall_seconds=3600) == four
    assert best_window([one, wide_short], nodes=8, wall_seconds=3600) == wide_short
    assert best_window(None, 1, None) is None and best_window([], 1, None) is None


def test_a_choice_needs_a_candidate():
    with pytest.raises(ValueError):
        choose([])


# Messages naming candidate sites (the unit settings have sites alpha and beta).


def _errors(call) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        call()
    return dict(caught.value.errors)


def _multi(sites: list[str], **fields) -> dict:
    message = argo_message()
    message["subjobs"][1] = {"name": "m", "sites": sites, "application": "echo", **fields}
    return message


def _balsam_multi(**fields) -> dict:
    return {"name": "m", "sites": ["alpha", "beta"], "application": "echo", **fields}


def test_an_unknown_candidate_is_named_with_its_index_and_nothing_is_stored(env):
    errors = _errors(lambda: submit_argo(_multi(["alpha", "beta", "x"])))
    assert "subjobs[1].sites[2]" in errors
    assert "'x'" in errors["subjobs[1].sites[2]"] and "alpha, beta" in errors["subjobs[1].sites[2]"]
    assert count(SubJob) == 0


def test_site_and_sites_together_are_refused_naming_sites(env):
    errors = _errors(lambda: submit_argo(_multi(["alpha"], site="beta")))
    assert errors == {"subjobs[1].sites": "give either site or sites (candidate sites), not both"}


def test_a_subjob_naming_no_site_is_refused(env):
    message = argo_message()
    del message["subjobs"][0]["site"]
    errors = _errors(lambda: submit_argo(message))
    assert errors == {"subjobs[0].site": "is required (or name candidate sites in sites)"}


def test_a_candidate_named_twice_and_an_empty_list_are_refused(env):
    assert _errors(lambda: submit_argo(_multi(["alpha", "alpha"]))) == {
        "subjobs[1].sites[1]": "'alpha' is named twice"
    }
    assert "subjobs[1].sites" in _errors(lambda: submit_argo(_multi([])))


def test_a_url_is_checked_at_every_candidate(env):
    errors = _errors(lambda: submit_balsam(_balsam_multi(input_url="local:///etc")))
    assert list(errors) == ["input_url"]


# The hand-off (no workers: the site rows say what each site can do).


def _site_state(site: str, alive: bool = True, breaker_open: bool = False) -> None:
    now = utcnow()
    with session_scope() as s:
        s.merge(
            SiteMonitor(
                site=site,
                tick_until=now,
                status_until=now,
                worker_seen_at=now if alive else None,
                breaker_until=now + timedelta(minutes=5) if breaker_open else None,
            )
        )


def _choices(subjob_id: int) -> list[str]:
    with session_scope() as s:
        return list(
            s.scalars(
                select(JobEvent.message).where(
                    JobEvent.subjob_id == subjob_id, JobEvent.message.like("site chosen:%")
                )
            )
        )


def test_the_hand_off_records_the_choice_once_and_a_rerun_keeps_it(env, tmp_path):
    for site in ("alpha", "beta"):
        applications.add_app("echo", site, "/bin/true")
    _site_state("alpha", breaker_open=True)
    _site_state("beta")
    argo_id = submit_argo(_multi(["alpha", "beta"]), start=False)
    with session_scope() as s:
        named = select(SubJob).where(SubJob.argo_job_id == argo_id, SubJob.name == "m")
        sj = s.scalars(named).one()
        ident, sites = sj.id, sj.sites
    assert subjob(ident).site == "alpha"  # the first candidate until the hand-off
    first = for_subjob(Record(ident, "CREATED", "alpha", argo_id))
    assert site_handoff.placed(first, sites).site == "beta"
    _site_state("alpha")  # alpha is ready again: a re-run keeps the first choice
    _site_state("beta", breaker_open=True)
    assert site_handoff.placed(first, sites).site == "beta"
    assert subjob(ident).site == "beta"
    [reason] = _choices(ident)
    assert reason.startswith("site chosen: beta: the best candidate that can take it now")
    assert "alpha: breaker open" in reason


def test_a_balsam_only_job_goes_to_the_chosen_site(env):
    applications.add_app("echo", "beta", "/bin/true")  # not registered at alpha
    _site_state("alpha")
    _site_state("beta")
    subjob_id = submit_balsam(_balsam_multi())
    assert subjob(subjob_id).site == "beta"
    assert "alpha: application not registered there" in _choices(subjob_id)[0]


def test_a_single_site_subjob_is_not_looked_at(env):
    owed = for_subjob(Record(1, "CREATED", "alpha"))
    assert site_handoff.placed(owed, None) is owed


def test_a_retry_of_a_job_whose_first_run_never_went_out_chooses_then(env):
    for site in ("alpha", "beta"):
        applications.add_app("echo", site, "/bin/true")
    _site_state("alpha", breaker_open=True)
    _site_state("beta")
    subjob_id = submit_balsam(_balsam_multi(), start=False)
    assert move_subjob(subjob_id, "CREATED", ["STAGED_IN_FAILED"], "could not queue")
    assert _choices(subjob_id) == []
    job_control.retry_subjob(subjob_id)
    assert subjob(subjob_id).site == "beta"
    assert len(_choices(subjob_id)) == 1


def test_the_hand_off_reads_the_idle_nodes_a_site_s_worker_last_saw(env):
    """The argo worker asks no scheduler: it reads the windows each site's worker reported
    (a pilot site's, when it sized a pilot). Fresh, a fitting one wins over the user's
    order; older than two status intervals, it is no information."""
    for site in ("alpha", "beta"):
        applications.add_app("echo", site, "/bin/true")
        _site_state(site)
    backfill_seen("beta", [Window(4, 3600, "partition debug")])
    chosen = submit_balsam(_balsam_multi())
    assert subjob(chosen).site == "beta"
    assert "beta: its idle nodes fit the subjob" in _choices(chosen)[0]
    assert "4 nodes idle for 3600 s" in _choices(chosen)[0]
    stale = utcnow() - timedelta(seconds=2 * get_settings().site("beta").status_interval + 1)
    with session_scope() as s:
        s.get(SiteMonitor, "beta").backfill_at = stale
    assert subjob(submit_balsam(_balsam_multi())).site == "alpha", "the user's order again"
