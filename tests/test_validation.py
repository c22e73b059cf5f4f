"""Job messages (seed 000 2.1.1, 2.2.1; seed 001 job definitions): what is accepted, what is
refused with every bad field named, and that a refused message stores nothing."""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

import pytest
from sqlalchemy import select

from edgeceleryapp.db import session_scope
from edgeceleryapp.errors import ValidationFailed
from edgeceleryapp.models import ArgoJob, JobEvent, SubJob
from edgeceleryapp.settings import get_settings, reset_settings
from tests.helpers import JOHNDOE, argo_message, count
from workflows.intake import submit_argo, submit_balsam
from workflows.schemas import ArgoJobMessage, BalsamJobMessage
from workflows.validation import parse_json, validate_argo, validate_balsam

# --- the seeds' examples ------------------------------------------------------------------

# Seed 000, Table 1: an example Balsam job.
TABLE_1 = {
    "name": "alpGenGeneration",
    "description": "W-boson to 4 jet events at 13TeV using AlpGen",
    "site": "mira",
    "queue": "prod-short",
    "project": "EnergyFEC",
    "wall_time_minutes": 30,
    "num_nodes": 16384,
    "processes_per_node": 64,
    "application": "alpGen_wjets",
    "config_file": "alpGen.ini",
}

# Seed 000, Table 3: an example Argo job. The table's second subjob is written `{ ... }`; it is
# replaced here by the serial step of section 3.1 run on a small HTCondor cluster.
# Its Argo-level fields repeat Table 1's name and description; its first subjob is Table 1's
# job under another name, with a hyphen in the application's name.
TABLE_3 = {
    "name": TABLE_1["name"],
    "description": TABLE_1["description"],
    "user_id": "alpGen.wjet.enu.5jets.13TeV.prodset001.job001",
    "group_identifier": "alpGen.wjet.enu.5jets.13TeV.prodset001",
    **JOHNDOE,
    "input_url": "gsiftp://path/to/input",
    "output_url": "gsiftp://path/to/output",
    "job_status_routing_key": "atlas_job_monitor",
    "subjobs": [
        {**TABLE_1, "name": "alpGenGenerator", "application": "alpGen-wjets"},
        {
            "name": "alpGenUnweight",
            "description": "Unweight and filter the generated W-boson + 4 jet events",
            "site": "hep_cluster",
            "queue": "serial",
            "project": "EnergyFEC",
            "wall_time_minutes": 240,
            "num_nodes": 1,
            "processes_per_node": 1,
            "application": "alpGen_unweight",
            "config_file": "alpGen_unweight.ini",
        },
    ],
}

# Seed 001, "Balsam Job Definitions", exactly as written: trailing blanks on every line and a
# trailing comma before the closing brace (not strict JSON; parse_json reads trailing commas).
SEED_001_BALSAM = """\
{  
    "name": "jobname",  
    "description": "a job to run",  
    "site": "site_name",  
    "argo_job_id": 1507945011064986,  
    "queue": "batch_queue_name",  
    "project": "batch_project_to_charge",  
    "wall_time_minutes": 30,  
    "num_nodes": 128,  
    "processes_per_node": 64,  
    "scheduler_config": "file_to_config_scheduler.cfg",  
    "application": "unique_application_name",  
    "config_file": "file_to_config_app.cfg",  
    "input_url": "protocol://server.name.gov/path/to/input/files",  
    "output_url": "protocol://server.name.gov/path/to/place/output/files",  
}
"""  # noqa: W291

# Seed 001, "Argo Job Definitions", exactly as written. Its subjobs are the placeholder
# `[balsam_job1, balsam_job2, ...]`, which the tests substitute with a list of two copies of
# the seed 001 Balsam example above (as JSON data).
SEED_001_ARGO = """\
{  
    "name": "jobname",  
    "description": "some jobs to run",  
    "user_id": "customizable_user_id_for_tracking",  
    "group_identifier": "customizable_user_id_for_tracking_groups_of_jobs",  
    "username": "username",  
    "email": "username@place.com",  
    "input_url": "protocol://server.name.gov/path/to/input/files",  
    "output_url": "protocol://server.name.gov/path/to/place/output/files",  
    "subjobs": [balsam_job1, balsam_job2, ...]  
}
"""  # noqa: W291
SUBJOBS_PLACEHOLDER = "[balsam_job1, balsam_job2, ...]"


def seed_001_argo_text() -> str:
    """The seed 001 Argo example with its placeholder replaced by two seed 001 Balsam jobs."""
    balsam = parse_json(SEED_001_BALSAM)
    assert SUBJOBS_PLACEHOLDER in SEED_001_ARGO
    return SEED_001_ARGO.replace(SUBJOBS_PLACEHOLDER, json.dumps([balsam, balsam]))


def test_seed_001_texts_are_not_strict_json_but_parse():
    with pytest.raises(json.JSONDecodeError):
        json.loads(SEED_001_BALSAM)  # the trailing comma: the fallback is really exercised
    data = parse_json(SEED_001_BALSAM)
    assert data["argo_job_id"] == 1507945011064986
    assert data["output_url"] == "protocol://server.name.gov/path/to/place/output/files"
    assert len(data) == 14


def test_table_1_balsam_job_validates():
    message = validate_balsam(TABLE_1)
    assert isinstance(message, BalsamJobMessage)
    assert message.model_dump(exclude_unset=True) == TABLE_1


def test_table_3_argo_job_validates():
    message = validate_argo(TABLE_3)
    assert isinstance(message, ArgoJobMessage)
    assert [sj.application for sj in message.subjobs] == ["alpGen-wjets", "alpGen_unweight"]
    assert message.job_status_routing_key == "atlas_job_monitor"
    assert message.email_list() == ["johndoe@doe.gov"]


def test_seed_001_balsam_example_validates_as_written():
    message = validate_balsam(parse_json(SEED_001_BALSAM))
    assert message.argo_job_id == 1507945011064986
    assert message.scheduler_config == "file_to_config_scheduler.cfg"
    assert message.num_nodes == 128


def test_seed_001_balsam_example_validates_from_bytes():
    message = validate_balsam(parse_json(SEED_001_BALSAM.encode()))
    assert message.application == "unique_application_name"


def test_seed_001_argo_example_validates():
    message = validate_argo(parse_json(seed_001_argo_text()))
    assert message.name == "jobname"
    assert len(message.subjobs) == 2
    assert all(sj.argo_job_id == 1507945011064986 for sj in message.subjobs)
    assert message.job_status_routing_key is None


def test_email_may_be_a_comma_separated_list():
    message = validate_argo({**TABLE_3, "email": "a@doe.gov, b@anl.gov,"})
    assert message.email_list() == ["a@doe.gov", "b@anl.gov"]


# --- refused messages ---------------------------------------------------------------------


@pytest.fixture
def env(env, monkeypatch):
    """The test deployment with /data, which valid_argo's URLs name, among the Argo service's
    transfer roots: intake refuses a local:// URL outside them."""
    monkeypatch.setenv("EDGECELERY_ARGO__TRANSFER_ROOTS", json.dumps([str(env.data), "/data"]))
    reset_settings()
    return env


def valid_argo(**fields: Any) -> dict[str, Any]:
    """A storable Argo job at the test deployment's sites."""
    return argo_message(
        **{
            "name": "chain",
            "group_identifier": "tests",
            "input_url": "local:///data/in",
            "output_url": "local:///data/out",
            "subjobs": [
                {"name": "first", "site": "alpha", "application": "echo", "config_file": "a.cfg"},
                {"name": "second", "site": "beta", "application": "echo", "wall_time_minutes": 5},
            ],
            **fields,
        }
    )


def without(key: str) -> dict[str, Any]:
    message = valid_argo()
    del message[key]
    return message


def sub(index: int, *, drop: str | None = None, **fields: Any) -> dict[str, Any]:
    message = valid_argo()
    subjob = message["subjobs"][index]
    if drop:
        del subjob[drop]
    subjob.update(fields)
    return message


def counts() -> tuple[int, ...]:
    return tuple(count(model) for model in (ArgoJob, SubJob, JobEvent))


INVALID = [
    pytest.param(without("name"), "name", id="missing-name"),
    pytest.param(valid_argo(name=""), "name", id="empty-name"),
    pytest.param(without("subjobs"), "subjobs", id="missing-subjobs"),
    pytest.param(valid_argo(subjobs=[]), "subjobs", id="empty-subjobs"),
    pytest.param(valid_argo(subjobs={"name": "x"}), "subjobs", id="subjobs-not-a-list"),
    pytest.param(valid_argo(subjobs=["job"]), "subjobs[0]", id="subjob-not-an-object"),
    pytest.param(sub(0, drop="site"), "subjobs[0].site", id="subjob-missing-site"),
    pytest.param(
        sub(1, drop="application"), "subjobs[1].application", id="subjob-missing-application"
    ),
    pytest.param(sub(0, drop="name"), "subjobs[0].name", id="subjob-missing-name"),
    pytest.param(
        sub(1, wall_time_minutes="30"), "subjobs[1].wall_time_minutes", id="wall-time-string"
    ),
    pytest.param(sub(1, wall_time_minutes=0), "subjobs[1].wall_time_minutes", id="wall-time-0"),
    pytest.param(
        sub(1, wall_time_minutes=30.5), "subjobs[1].wall_time_minutes", id="wall-time-float"
    ),
    pytest.param(sub(0, num_nodes=-4), "subjobs[0].num_nodes", id="num-nodes-negative"),
    pytest.param(sub(0, num_nodes=True), "subjobs[0].num_nodes", id="num-nodes-bool"),
    pytest.param(
        sub(0, processes_per_node=0), "subjobs[0].processes_per_node", id="processes-per-node-0"
    ),
    pytest.param(sub(0, argo_job_id="17"), "subjobs[0].argo_job_id", id="argo-job-id-string"),
    pytest.param(valid_argo(nmae="typo"), "nmae", id="unknown-top-level-field"),
    pytest.param(sub(1, wall_time="30"), "subjobs[1].wall_time", id="unknown-subjob-field"),
    pytest.param(sub(0, config_file="../secret.cfg"), "subjobs[0].config_file", id="cfg-dotdot"),
    pytest.param(
        sub(0, config_file="a/../../b.cfg"), "subjobs[0].config_file", id="cfg-inner-dotdot"
    ),
    pytest.param(sub(0, config_file="/etc/passwd"), "subjobs[0].config_file", id="cfg-absolute"),
    pytest.param(sub(0, config_file="~/x.cfg"), "subjobs[0].config_file", id="cfg-home"),
    pytest.param(sub(0, config_file="a.cfg\nb"), "subjobs[0].config_file", id="cfg-newline"),
    pytest.param(sub(0, config_file="   "), "subjobs[0].config_file", id="cfg-blank"),
    pytest.param(
        sub(0, scheduler_config="/etc/sched.cfg"),
        "subjobs[0].scheduler_config",
        id="scheduler-config-absolute",
    ),
    pytest.param(sub(0, site="al pha"), "subjobs[0].site", id="site-space"),
    pytest.param(sub(1, site="beta;rm"), "subjobs[1].site", id="site-semicolon"),
    pytest.param(sub(0, site="../beta"), "subjobs[0].site", id="site-path"),
    pytest.param(sub(0, application="$(reboot)"), "subjobs[0].application", id="app-subshell"),
    pytest.param(sub(0, application="echo;id"), "subjobs[0].application", id="app-semicolon"),
    pytest.param(sub(0, queue="prod short"), "subjobs[0].queue", id="queue-space"),
    pytest.param(sub(0, project="-x"), "subjobs[0].project", id="project-leading-dash"),
    pytest.param(valid_argo(input_url="/data/in"), "input_url", id="input-url-no-scheme"),
    pytest.param(
        valid_argo(output_url="gsiftp://host/out dir"), "output_url", id="output-url-space"
    ),
    pytest.param(
        valid_argo(output_url="gsiftp://host/out\n"), "output_url", id="output-url-newline"
    ),
    pytest.param(sub(1, input_url="host:/x"), "subjobs[1].input_url", id="subjob-url-no-scheme"),
    pytest.param(valid_argo(email="johndoe at doe.gov"), "email", id="email-bad"),
    pytest.param(valid_argo(email="a@doe.gov, b@"), "email", id="email-second-bad"),
    pytest.param(valid_argo(email="a@doe.gov;b@doe.gov"), "email", id="email-semicolon"),
    pytest.param(
        valid_argo(job_status_routing_key="atlas.#"), "job_status_routing_key", id="key-hash"
    ),
    pytest.param(
        valid_argo(job_status_routing_key="atlas.*"), "job_status_routing_key", id="key-star"
    ),
    pytest.param(valid_argo(name="a\x00b"), "name", id="name-control-char"),
    pytest.param(valid_argo(description="bell\x07"), "description", id="description-control"),
    pytest.param(valid_argo(user_id=42), "user_id", id="user-id-number"),
    pytest.param(json.dumps([valid_argo()]), "message", id="json-array"),
    pytest.param(json.dumps("chain"), "message", id="json-string"),
    pytest.param([valid_argo()], "message", id="python-list"),
    pytest.param(None, "message", id="none"),
    pytest.param('{"name": "chain", "subjobs": [', "message", id="json-truncated"),
    pytest.param("name = 'chain'", "message", id="not-json"),
    pytest.param("", "message", id="empty-text"),
    pytest.param(b"\xff\xfe{}", "message", id="not-utf8"),
]


@pytest.mark.parametrize(("message", "field"), INVALID)
def test_invalid_argo_message_is_refused_and_nothing_stored(env, message, field):
    with pytest.raises(ValidationFailed) as info:
        submit_argo(copy.deepcopy(message), start=False)
    errors = info.value.errors
    assert [f for f, _ in errors] == [field], errors
    assert all(isinstance(problem, str) and problem for _, problem in errors)
    assert field in str(info.value)
    assert counts() == (0, 0, 0)


def test_every_bad_field_is_listed_in_one_error(env):
    message = valid_argo(email="nobody", nmae="typo")
    del message["name"]
    message["subjobs"][0].update(num_nodes=0, config_file="../x.cfg", application="a b")
    message["subjobs"][1].update(wall_time_minutes="30", extra=1)
    del message["subjobs"][1]["site"]
    with pytest.raises(ValidationFailed) as info:
        submit_argo(json.dumps(message), start=False)
    fields = [f for f, _ in info.value.errors]
    assert sorted(fields) == sorted(
        [
            "name",
            "email",
            "nmae",
            "subjobs[0].num_nodes",
            "subjobs[0].config_file",
            "subjobs[0].application",
            "subjobs[1].wall_time_minutes",
            "subjobs[1].extra",
            "subjobs[1].site",
        ]
    )
    problems = dict(info.value.errors)
    assert problems["name"] == "is required"
    assert problems["nmae"] == "unknown field; did you mean 'name'?"
    assert counts() == (0, 0, 0)


def test_unconfigured_site_is_refused_and_nothing_stored(env):
    assert sorted(get_settings().sites) == ["alpha", "beta"]
    message = sub(1, site="gamma")
    with pytest.raises(ValidationFailed) as info:
        submit_argo(message, start=False)
    assert [f for f, _ in info.value.errors] == ["subjobs[1].site"]
    assert "gamma" in info.value.errors[0][1]
    assert counts() == (0, 0, 0)


def test_every_unconfigured_site_is_listed(env):
    message = valid_argo()
    message["subjobs"][0]["site"] = "mira"
    message["subjobs"][1]["site"] = "hep_cluster"
    with pytest.raises(ValidationFailed) as info:
        submit_argo(message, start=False)
    assert [f for f, _ in info.value.errors] == ["subjobs[0].site", "subjobs[1].site"]
    assert counts() == (0, 0, 0)


def test_unconfigured_site_is_listed_with_other_field_errors(env):
    message = sub(1, site="gamma", num_nodes=0)
    with pytest.raises(ValidationFailed) as info:
        submit_argo(message, start=False)
    assert sorted(f for f, _ in info.value.errors) == ["subjobs[1].num_nodes", "subjobs[1].site"]


def test_balsam_job_at_unconfigured_site_is_refused(env):
    with pytest.raises(ValidationFailed) as info:
        submit_balsam(parse_json(SEED_001_BALSAM), start=False)
    assert [f for f, _ in info.value.errors] == ["site"]
    assert counts() == (0, 0, 0)


# --- stored messages ----------------------------------------------------------------------


def stored(argo_id: int) -> tuple[ArgoJob, list[SubJob], list[JobEvent]]:
    with session_scope() as s:
        argo = s.get(ArgoJob, argo_id)
        subjobs = list(
            s.scalars(select(SubJob).where(SubJob.argo_job_id == argo_id).order_by(SubJob.id))
        )
        events = list(s.scalars(select(JobEvent).order_by(JobEvent.id)))
        s.expunge_all()
    return argo, subjobs, events


def test_valid_message_is_stored_created_with_subjobs_in_order(env):
    message = valid_argo(
        user_id="u1", username="jdoe", email="jdoe@anl.gov", job_status_routing_key="mon"
    )
    message["subjobs"].append({"name": "third", "site": "alpha", "application": "merge"})
    argo_id = submit_argo(json.dumps(message), start=False)
    assert isinstance(argo_id, int)
    argo, subjobs, events = stored(argo_id)
    assert argo.state == "CREATED"
    assert argo.num_subjobs == 3
    assert argo.current_subjob == 0
    assert (argo.name, argo.user_id, argo.username, argo.email) == (
        "chain",
        "u1",
        "jdoe",
        "jdoe@anl.gov",
    )
    assert argo.group_identifier == "tests"
    assert argo.job_status_routing_key == "mon"
    assert [sj.position for sj in subjobs] == [0, 1, 2]
    assert [sj.name for sj in subjobs] == ["first", "second", "third"]
    assert [sj.site for sj in subjobs] == ["alpha", "beta", "alpha"]
    assert [sj.application for sj in subjobs] == ["echo", "echo", "merge"]
    assert [sj.state for sj in subjobs] == ["CREATED"] * 3
    assert subjobs[0].config_file == "a.cfg"
    assert subjobs[1].wall_time_minutes == 5
    assert (subjobs[2].num_nodes, subjobs[2].processes_per_node) == (1, 1)
    assert all(sj.origin_argo_job_id is None for sj in subjobs)
    assert [(e.argo_job_id, e.subjob_id, e.from_state, e.to_state) for e in events] == [
        (argo_id, None, "", "CREATED"),
        *[(argo_id, sj.id, "", "CREATED") for sj in subjobs],
    ]
    assert counts() == (1, 3, 4)


def test_data_is_wired_from_staging_through_each_subjob(env):
    message = valid_argo()
    message["subjobs"].append({"name": "third", "site": "alpha", "application": "echo"})
    argo_id = submit_argo(message, start=False)
    argo, subjobs, _ = stored(argo_id)
    staging = get_settings().argo.staging_url_for
    assert argo.input_url == "local:///data/in"
    assert argo.output_url == "local:///data/out"
    assert subjobs[0].input_url == staging(str(argo_id), "input")
    for before, after in itertools.pairwise(subjobs):
        assert after.input_url == before.output_url
    outputs = [sj.output_url for sj in subjobs]
    assert len(set(outputs)) == 3, "each step writes to its own place"
    assert outputs[-1] == staging(str(argo_id), "output")
    assert all(url.startswith(staging(str(argo_id))) for url in outputs)


def test_first_subjob_has_no_input_when_the_argo_job_has_none(env):
    message = valid_argo()
    del message["input_url"]
    argo_id = submit_argo(message, start=False)
    _, subjobs, _ = stored(argo_id)
    assert subjobs[0].input_url is None
    assert subjobs[1].input_url == subjobs[0].output_url


def test_explicit_subjob_urls_are_kept(env):
    message = valid_argo()
    message["subjobs"][0]["output_url"] = "gsiftp://dtn.anl.gov/first/out"
    message["subjobs"][1]["input_url"] = "scp://other.host/prepared"
    message["subjobs"][1]["output_url"] = "gsiftp://dtn.anl.gov/final"
    message["subjobs"].append({"name": "third", "site": "alpha", "application": "echo"})
    argo_id = submit_argo(message, start=False)
    _, subjobs, _ = stored(argo_id)
    assert subjobs[0].output_url == "gsiftp://dtn.anl.gov/first/out"
    assert subjobs[1].input_url == "scp://other.host/prepared"
    assert subjobs[1].output_url == "gsiftp://dtn.anl.gov/final"
    assert subjobs[2].input_url == "gsiftp://dtn.anl.gov/final"
    staging = get_settings().argo.staging_url_for
    assert subjobs[2].output_url == staging(str(argo_id), "output")


def test_table_3_at_test_sites_is_stored(env):
    message = copy.deepcopy(TABLE_3)
    message["subjobs"][0]["site"] = "beta"
    message["subjobs"][1]["site"] = "alpha"
    argo_id = submit_argo(message, start=False)
    argo, subjobs, _ = stored(argo_id)
    assert argo.state == "CREATED"
    assert argo.group_identifier == TABLE_3["group_identifier"]
    assert [sj.name for sj in subjobs] == ["alpGenGenerator", "alpGenUnweight"]
    assert subjobs[0].num_nodes == 16384
    assert subjobs[0].queue == "prod-short"
    assert subjobs[0].input_url == get_settings().argo.staging_url_for(str(argo_id), "input")
    assert subjobs[1].input_url == subjobs[0].output_url


def test_seed_001_argo_example_at_test_sites_is_stored(env):
    data = parse_json(seed_001_argo_text())
    for subjob, site in zip(data["subjobs"], ("alpha", "beta"), strict=True):
        subjob["site"] = site
        del subjob["input_url"], subjob["output_url"]  # let Argo wire the data
    argo_id = submit_argo(data, start=False)
    argo, subjobs, _ = stored(argo_id)
    assert argo.name == "jobname"
    assert [sj.site for sj in subjobs] == ["alpha", "beta"]
    # the message's argo_job_id names a job elsewhere; the subjobs belong to ours
    assert all(sj.argo_job_id == argo_id for sj in subjobs)
    assert subjobs[1].input_url == subjobs[0].output_url


def test_balsam_job_is_stored_with_its_origin_argo_job_id(env):
    data = parse_json(SEED_001_BALSAM)
    data["site"] = "alpha"
    subjob_id = submit_balsam(data, start=False)
    with session_scope() as s:
        sj = s.get(SubJob, subjob_id)
        assert sj.argo_job_id is None
        assert sj.origin_argo_job_id == 1507945011064986
        assert sj.input_url == "protocol://server.name.gov/path/to/input/files"
        assert sj.state == "CREATED"
    assert counts() == (0, 1, 1)
