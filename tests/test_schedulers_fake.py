"""The PBS Pro, TORQUE, Cobalt, HTCondor, LSF and Grid Engine plug-ins.

First the parsers, fed the tools' own output formats (no processes). Then each plug-in end to
end through the site steps and the poller, against the fake scheduler in tests/fakes/<family>
(real commands on PATH that keep their jobs in a state file and run them for real; see
tests/fakes/engine.py for the faults they can be told to show).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backends.runners.base import CommandResult
from backends.schedulers import scheduler_for
from backends.schedulers.base import (
    CANCELLED,
    FAILED,
    FINISHED,
    NODE_FAIL,
    PREEMPTED,
    QUEUED,
    RUNNING,
    TIMEOUT,
    BatchRequest,
)
from backends.schedulers.cobalt import parse_cobaltlog, parse_qstat_long
from backends.schedulers.condor import CondorScheduler, parse_ads
from backends.schedulers.lsf import parse_bjobs_json
from backends.schedulers.pbs import by_number, parse_pro_json, parse_torque_xml
from backends.schedulers.sge import parse_qacct, parse_qstat_xml
from edgeceleryapp import job_control
from edgeceleryapp.devstack import wait_for
from edgeceleryapp.errors import PermanentError
from edgeceleryapp.settings import SiteSettings, get_settings, reset_settings
from tasks import site, site_steps
from tasks.poll import poll_site
from tasks.site_steps import workdir_of
from tests.fakes import engine as fake
from tests.helpers import (
    SUBJOB_PATH,
    balsam_message,
    batch_name,
    captured_cancels,
    echo_app,
    gated_app,
    poll_until_ended,
    run_to_submitted,
    subjob,
    subjob_states,
)
from workflows.intake import submit_balsam

FAKES = Path(__file__).parent / "fakes"
# kind -> (fake family, its environment, the command that answers statuses)
KINDS = {
    "pbs": ("pbs", {"FAKE_PBS_FLAVOR": "pbspro"}, "qstat"),
    "torque": ("pbs", {"FAKE_PBS_FLAVOR": "torque"}, "qstat"),
    "cobalt": ("cobalt", {}, "qstat"),
    "condor": ("condor", {}, "condor_q"),
    "lsf": ("lsf", {}, "bjobs"),
    "sge": ("sge", {}, "qstat"),
}
# What each submit command says when the fault file says {"refuse": true}.
REFUSAL = {
    "pbs": "qsub: Unknown queue",
    "torque": "qsub: submit error (Unknown queue)",
    "cobalt": "queue 'debug' does not exist",
    "condor": "ERROR: Failed to commit job submission into the queue.",
    "lsf": "debug: No such queue. Job not submitted.",
    "sge": 'job requests unknown queue "debug"',
}
# A passing trouble, in each tool's words: retried, then given up with the reason.
BUSY = {
    "pbs": "qsub: cannot connect to server pbsserver (errno=15010)",
    "torque": "qsub: cannot connect to server torqueserver (errno=111) Connection refused",
    "cobalt": "Failed to connect to system component queue-manager",
    "condor": "ERROR: Can't find address of local schedd",
    "lsf": "LSF is down. Please wait ...\nbatch system daemon not responding ... still trying",
    "sge": "error: commlib error: got select error (Connection refused)\nUnable to run job: "
    'unable to send message to qmaster using port 6444 on host "master": got send error.',
}
IN_FLIGHT = ("SUBMITTED", "QUEUED", "RUNNING")


# --- parsers ------------------------------------------------------------------------------

PRO_JSON = """{
    "timestamp":1652196000,
    "pbs_version":"22.05.11",
    "pbs_server":"pbs01",
    "Jobs":{
        "101.pbs01":{"Job_Name":"ec1a1","job_state":"Q","comment":"Not Running: Queue busy"},
        "102.pbs01":{"Job_Name":"ec2a1","job_state":"R","substate":42},
        "103.pbs01":{"Job_Name":"ec3a1","job_state":"F","Exit_status":0,"substate":92},
        "104.pbs01":{"Job_Name":"ec4a1","job_state":"F","Exit_status":-3,
                     "comment":"Job run at Tue May 10 at 12:00 and killed: execution node n1 down"},
        "105.pbs01":{"Job_Name":"ec5a1","job_state":"F","Exit_status":-29},
        "106.pbs01":{"Job_Name":"ec6a1","job_state":"F","Exit_status":271},
        "107.pbs01":{"Job_Name":"ec7a1","job_state":"H"}
    }
}"""

TORQUE_XML = (
    "<Data><Job><Job_Id>7.head</Job_Id><Job_Name>ec1a1</Job_Name><job_state>C</job_state>"
    "<exit_status>-11</exit_status></Job><Job><Job_Id>8.head</Job_Id><Job_Name>ec2a1</Job_Name>"
    "<job_state>C</job_state><exit_status>0</exit_status></Job><Job><Job_Id>9.head</Job_Id>"
    "<Job_Name>ec3a1</Job_Name><job_state>R</job_state></Job><Job><Job_Id>10.head</Job_Id>"
    "<Job_Name>ec4a1</Job_Name><job_state>C</job_state><exit_status>271</exit_status></Job>"
    "</Data>"
)


def test_pbspro_json_states_exit_statuses_and_causes():
    got = parse_pro_json(PRO_JSON)
    assert got["101.pbs01"].state == QUEUED and "Queue busy" in got["101.pbs01"].reason
    assert got["102.pbs01"].state == RUNNING
    assert (got["103.pbs01"].state, got["103.pbs01"].exit_code) == (FINISHED, 0)
    assert (got["104.pbs01"].state, got["104.pbs01"].cause) == (FAILED, NODE_FAIL)
    assert got["105.pbs01"].cause == TIMEOUT  # JOB_EXEC_KILL_WALLTIME
    assert (got["106.pbs01"].state, got["106.pbs01"].exit_code) == (FINISHED, 271)
    assert got["107.pbs01"].state == QUEUED  # held
    no_jobs = '{"timestamp":1,"pbs_version":"22.05.11","pbs_server":"pbs01"}'
    assert parse_pro_json(no_jobs) == {} and parse_pro_json("") == {}


def test_torque_xml_walltime_codes_and_names():
    got = parse_torque_xml(TORQUE_XML)
    assert got["7.head"] == ("ec1a1", got["7.head"][1]) and got["7.head"][1].cause == TIMEOUT
    assert (got["8.head"][1].state, got["8.head"][1].exit_code) == (FINISHED, 0)
    assert got["9.head"][1].state == RUNNING
    assert got["10.head"][1].cause == TIMEOUT  # 256 + SIGTERM at the wall-time limit
    assert parse_torque_xml("") == {}


def test_answers_keyed_by_the_ids_we_asked_with():
    answer = parse_pro_json(PRO_JSON.replace(".pbs01", ".pbs01.example.org"))
    assert set(by_number(["101.pbs01", "999.pbs01"], answer)) == {"101.pbs01"}


def test_lsf_json_records_errors_and_termination_reasons():
    out = """{"COMMAND":"bjobs","JOBS":6,"RECORDS":[
      {"JOBID":"11","JOB_NAME":"ec1a1","STAT":"PEND","EXIT_CODE":"","EXIT_REASON":""},
      {"JOBID":"12","JOB_NAME":"ec2a1","STAT":"RUN","EXIT_CODE":"","EXIT_REASON":""},
      {"JOBID":"13","JOB_NAME":"ec3a1","STAT":"DONE","EXIT_CODE":"","EXIT_REASON":""},
      {"JOBID":"14","JOB_NAME":"ec4a1","STAT":"EXIT","EXIT_CODE":"3","EXIT_REASON":""},
      {"JOBID":"15","JOB_NAME":"ec5a1","STAT":"EXIT","EXIT_CODE":"130",
       "EXIT_REASON":"TERM_PREEMPT: job killed after preemption"},
      {"JOBID":"16","JOB_NAME":"ec6a1","STAT":"EXIT","EXIT_CODE":"140",
       "EXIT_REASON":"job killed after reaching LSF run time limit"},
      {"JOBID":"99","ERROR":"Job <99> is not found"}]}"""
    got = parse_bjobs_json(out)
    assert [got[i].state for i in ("11", "12", "13", "14")] == [QUEUED, RUNNING, FINISHED, FINISHED]
    assert (got["13"].exit_code, got["14"].exit_code) == (0, 3)
    assert (got["15"].state, got["15"].cause) == (FAILED, PREEMPTED)
    assert got["16"].cause == TIMEOUT
    assert "99" not in got, "an unknown id is left out, never reported done"


def test_condor_ads_held_removed_evicted_completed():
    out = """[
{"ClusterId": 5, "ProcId": 0, "JobBatchName": "ec1a1", "JobStatus": 1, "NumJobStarts": 1}
,
{"ClusterId": 6, "ProcId": 0, "JobBatchName": "ec2a1", "JobStatus": 5, "HoldReasonCode": 46,
 "HoldReason": "The job exceeded allowed job duration of 0+00:30:00"}
,
{"ClusterId": 7, "ProcId": 0, "JobBatchName": "ec3a1", "JobStatus": 3,
 "RemoveReason": "via condor_rm (by user alice)"}
,
{"ClusterId": 8, "ProcId": 0, "JobBatchName": "ec4a1", "JobStatus": 4, "ExitCode": 2,
 "ExitBySignal": false}
,
{"ClusterId": 9, "ProcId": 0, "JobBatchName": "ec5a1", "JobStatus": 5, "HoldReasonCode": 21,
 "HoldReason": "Job held by the startd"}
]"""
    got = {k: s for k, (_, s) in parse_ads(out).items()}
    assert got["5.0"].state == QUEUED and "evicted" in got["5.0"].reason
    assert (got["6.0"].state, got["6.0"].cause) == (FAILED, TIMEOUT)
    assert got["7.0"].cause == CANCELLED
    assert (got["8.0"].state, got["8.0"].exit_code) == (FINISHED, 2)
    assert got["9.0"].cause == PREEMPTED  # any other hold
    assert parse_ads("") == {}


def test_sge_qstat_xml_and_qacct_records():
    xml = """<?xml version='1.0'?>
<job_info  xmlns:xsd="http://arc.liv.ac.uk/repos/darcs/sge/source/dist/util/resources/schemas/qstat/qstat.xsd">
  <queue_info>
    <job_list state="running">
      <JB_job_number>21</JB_job_number><JB_name>ec1a1</JB_name><state>r</state>
    </job_list>
  </queue_info>
  <job_info>
    <job_list state="pending">
      <JB_job_number>22</JB_job_number><JB_name>ec2a1</JB_name><state>qw</state>
    </job_list>
    <job_list state="pending">
      <JB_job_number>23</JB_job_number><JB_name>ec3a1</JB_name><state>Eqw</state>
    </job_list>
  </job_info>
</job_info>"""
    live = parse_qstat_xml(xml)
    assert [live[i][1].state for i in ("21", "22", "23")] == [RUNNING, QUEUED, FAILED]
    acct = "\n".join(
        [
            "=" * 62,
            "jobname      ec4a1",
            "jobnumber    24",
            "failed       0",
            "exit_status  5",
            "=" * 62,
            "jobname      ec5a1",
            "jobnumber    25",
            "failed       37  : qmaster enforced h_rt, h_cpu, or h_vmem limit",
            "exit_status  137",
        ]
    )
    ended = parse_qacct(acct)
    assert ended["24"] == ("ec4a1", ended["24"][1]) and ended["24"][1].exit_code == 5
    assert ended["25"][1].cause == TIMEOUT


def test_cobalt_long_listing_and_cobaltlog_endings():
    out = (
        "Jobid: 354001\n    JobName     : ec1a1\n    State       : queued\n\n"
        "Jobid: 354002\n    JobName     : ec2a1\n    State       : running\n\n"
    )
    got = parse_qstat_long(out)
    assert got["354001"] == ("ec1a1", got["354001"][1]) and got["354001"][1].state == QUEUED
    assert got["354002"][1].state == RUNNING
    log = (
        "Jobid: 354002\nqsub /x/job.sh\n"
        "Tue Jan 01 12:00:00 2019 +0000 (UTC) Info: submitted with cwd set to: /x\n"
        "Tue Jan 01 12:01:00 2019 +0000 (UTC) Info: task completed normally with an exit code "
        "of 4; initiating job cleanup and removal\n"
    )
    assert (parse_cobaltlog(log).state, parse_cobaltlog(log).exit_code) == (FINISHED, 4)
    late = log.rsplit("Tue", 1)[0] + "Tue ... Info: maximum execution time exceeded; initiating"
    assert parse_cobaltlog(late).cause == TIMEOUT
    assert parse_cobaltlog(log.split("Tue Jan 01 12:01")[0]) is None, "still going"


class Answers:
    """A runner that answers every command with the same output."""

    def __init__(self, stdout: str):
        self.stdout = stdout

    def run(self, argv, **_options) -> CommandResult:  # type: ignore[no-untyped-def]
        return CommandResult(tuple(argv), 0, self.stdout, "")


@pytest.mark.parametrize("kind", ["slurm", *KINDS])
def test_an_unreadable_answer_is_a_permanent_error(kind, tmp_path):
    """Never a ValueError: the circuit breaker and the poller count typed errors only."""
    plugin = scheduler_for(SiteSettings(scheduler=kind, workdir=tmp_path))
    plugin.runner = Answers("{<garbled")
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(PermanentError, match="not a job id"):
        plugin.submit(script, BatchRequest(name="ec1a1", workdir=tmp_path, argv=["true"]))
    if kind in ("pbs", "condor", "lsf", "sge", "torque"):
        with pytest.raises(PermanentError, match="cannot read"):
            plugin.statuses(["5"])


HOSTILE = ["$(touch /tmp/x)", "a b", "'; rm -rf ~; '"]


@pytest.mark.parametrize("kind", list(KINDS))
def test_rendered_script_has_directives_and_quotes_every_argument(kind, tmp_path):
    request = BatchRequest(
        name="ec7a2",
        workdir=tmp_path,
        argv=["/opt/app", *HOSTILE],
        queue="prod-short",
        project="EnergyFEC",
        wall_time_minutes=90,
        num_nodes=2,
        processes_per_node=4,
        options=["-l place=scatter"],
    )
    plugin = scheduler_for(SiteSettings(scheduler=kind, workdir=tmp_path))
    text = plugin.render(request)
    if kind == "condor":
        text = CondorScheduler.description(plugin, tmp_path / "job.sh", request)
        assert "batch_name = ec7a2" in text and 'ProjectName = "EnergyFEC"' in text
        assert "allowed_job_duration = 5400" in text and "machine_count = 2" in text
        assert "-l place=scatter\nqueue\n" in text
        return
    prefix = {"pbs": "#PBS", "torque": "#PBS", "cobalt": "#COBALT", "lsf": "#BSUB", "sge": "#$"}
    lines = text.splitlines()
    assert f"{prefix[kind]} -l place=scatter" in lines, "a site option is one directive"
    assert any("ec7a2" in line for line in lines if line.startswith(prefix[kind]))
    assert any("prod-short" in line for line in lines if line.startswith(prefix[kind]))
    assert any("EnergyFEC" in line for line in lines if line.startswith(prefix[kind]))
    assert "/opt/app '$(touch /tmp/x)' 'a b' ''\"'\"'; rm -rf ~; '\"'\"''" in text
    expected = {
        "pbs": ["#PBS -l select=2:ncpus=4:mpiprocs=4", "#PBS -l walltime=01:30:00"],
        "torque": ["#PBS -l nodes=2:ppn=4", "#PBS -l walltime=01:30:00"],
        "cobalt": ["#COBALT -n 2", "#COBALT -t 90"],
        "lsf": ["#BSUB -n 8", '#BSUB -R "span[ptile=4]"', "#BSUB -W 90"],
        "sge": ["#$ -l h_rt=1:30:00"],
    }[kind]
    assert set(expected) <= set(lines)


# --- end to end against the fakes ---------------------------------------------------------


@dataclass
class Fake:
    kind: str
    dir: Path
    status_tool: str
    env: object
    base_config: str

    def configure(self, **values: object) -> None:
        """Site alpha on this scheduler, with these settings."""
        extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in values.items())
        text = self.base_config.replace(
            '[sites.alpha]\nscheduler = "local"\n',
            f'[sites.alpha]\nscheduler = "{self.kind}"\nqueue = "debug"\n'
            f'project = "EnergyFEC"\n{extra}',
        )
        assert text != self.base_config
        self.env.config.write_text(text)
        reset_settings()

    def faults(self, **items: object) -> None:
        fake.set_faults(self.dir, **items)

    @property
    def jobs(self) -> list[dict]:
        return list(fake.load(self.dir)["jobs"].values())

    @property
    def submissions(self) -> int:
        return fake.load(self.dir)["submissions"]

    def scheduler(self):  # type: ignore[no-untyped-def]
        return scheduler_for(get_settings().site("alpha"))


@pytest.fixture(params=list(KINDS))
def sched(request, env, monkeypatch, tmp_path) -> Iterator[Fake]:
    kind = request.param
    family, extra_env, status_tool = KINDS[kind]
    directory = tmp_path / "sched"
    directory.mkdir()
    path = os.pathsep.join([str(FAKES / family), str(Path(sys.executable).parent)])
    monkeypatch.setenv("PATH", path + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv("FAKE_SCHED_DIR", str(directory))
    for key, value in extra_env.items():
        monkeypatch.setenv(key, value)
    handle = Fake(kind, directory, status_tool, env, env.config.read_text())
    handle.configure()
    try:
        yield handle
    finally:
        fake.kill_all(directory)


def poll_until(job_id: int, state: str, timeout: float = 15) -> None:
    def there() -> bool:
        poll_site("alpha")
        return subjob(job_id).state == state

    wait_for(there, timeout, f"subjob {job_id} to be {state}", interval=0.05)


def test_queued_running_done_to_job_finished(sched):
    gated_app(sched.env.root)
    out = sched.env.data / "out"
    job_id = submit_balsam(balsam_message(app="gated", output_url=f"local://{out}"), start=False)
    sched.faults(hold_queue=True)
    run_to_submitted(job_id)
    (job,) = sched.jobs
    assert job["name"] == batch_name(job_id) and job["state"] == "queued"
    if sched.kind != "condor":  # HTCondor has no queues
        assert job["queue"] == "debug"
    assert job["account"] == "EnergyFEC"
    batch_id = subjob(job_id).batch_job_id
    assert sched.scheduler().statuses([batch_id])[batch_id].state == QUEUED
    poll_until(job_id, "QUEUED")
    sched.faults()
    poll_until(job_id, "RUNNING")
    assert sched.scheduler().statuses([batch_id])[batch_id].state == RUNNING
    (workdir_of(subjob(job_id)) / "go").touch()
    ended = poll_until_ended(job_id)
    assert ended.state == "POSTPROCESSED", "no postprocess script: passed in the tick"
    site.stage_out.apply(args=(job_id,))
    assert subjob(job_id).state == "JOB_FINISHED"
    assert subjob_states(job_id) == SUBJOB_PATH
    assert (out / "runs.log").read_text() == "run\n"
    answer = {}

    def reported_done() -> bool:
        answer.update(sched.scheduler().statuses([batch_id, "4242"]))
        return batch_id in answer and answer[batch_id].state == FINISHED

    wait_for(reported_done, 10, "the scheduler to report the job done")
    assert answer[batch_id].exit_code == 0
    assert set(answer) == {batch_id}, "an unknown id is left out"


def test_failing_application_ends_with_its_exit_code(sched):
    echo_app(sched.env.root, "alpha", exit_code=3)
    job_id = submit_balsam(balsam_message(), start=False)
    run_to_submitted(job_id)
    final = poll_until_ended(job_id)
    assert final.state == "EXECUTION_FINISHED_FAILED"
    assert final.exit_code == 3 and "exited with code 3" in final.state_message


def test_refused_submission_fails_with_the_tools_words(sched):
    echo_app(sched.env.root, "alpha")
    job_id = submit_balsam(balsam_message(), start=False)
    sched.faults(refuse=True)
    run_to_submitted(job_id)
    failed = subjob(job_id)
    assert failed.state == "SUBMITTED_FAILED"
    assert REFUSAL[sched.kind] in failed.state_message
    assert "gave up" not in failed.state_message, "a refusal is not retried"
    assert sched.submissions == 0


def test_busy_scheduler_is_retried_then_given_up(sched):
    echo_app(sched.env.root, "alpha")
    job_id = submit_balsam(balsam_message(), start=False)
    sched.faults(refuse=BUSY[sched.kind])
    run_to_submitted(job_id)
    failed = subjob(job_id)
    assert failed.state == "SUBMITTED_FAILED"
    assert "gave up after 2 retries" in failed.state_message
    assert BUSY[sched.kind].splitlines()[-1][:40] in failed.state_message


def test_hanging_status_command_is_survived(sched):
    sched.configure(command_timeout=1)
    echo_app(sched.env.root, "alpha")
    job_id = submit_balsam(balsam_message(), start=False)
    sched.faults(hold_queue=True)
    run_to_submitted(job_id)
    assert subjob(job_id).state == "SUBMITTED"
    sched.faults(hold_queue=True, hang=[sched.status_tool])

    def hung_once() -> bool:
        poll_site("alpha")  # must neither raise nor move the job
        return bool(fake.hangs(sched.dir))

    wait_for(hung_once, 10, "a status query that hangs")
    assert subjob(job_id).state == "SUBMITTED"
    sched.faults()
    assert poll_until_ended(job_id).state == "JOB_FINISHED"


def test_vanished_job_is_declared_lost(sched):
    sched.configure(lost_after=1)
    gated_app(sched.env.root)
    job_id = submit_balsam(balsam_message(app="gated"), start=False)
    sched.faults(hold_queue=True)
    run_to_submitted(job_id)
    poll_until(job_id, "QUEUED")
    sched.faults(vanish=True)
    final = poll_until_ended(job_id)
    assert final.state == "EXECUTION_FINISHED_FAILED"
    assert "lost" in final.state_message
    assert sched.scheduler().statuses([final.batch_job_id]) == {}


def test_node_failure_is_reported_with_its_cause(sched):
    sched.configure(max_attempts=1)
    gated_app(sched.env.root)
    job_id = submit_balsam(balsam_message(app="gated"), start=False)
    run_to_submitted(job_id)
    poll_until(job_id, "RUNNING")
    batch_id = subjob(job_id).batch_job_id
    sched.faults(node_fail=True)
    status = sched.scheduler().statuses([batch_id])[batch_id]
    assert (status.state, status.cause) == (FAILED, NODE_FAIL)
    assert "node" in status.reason or "host" in status.reason
    final = poll_until_ended(job_id)
    assert final.state == "EXECUTION_FINISHED_FAILED"
    assert "batch job ended: NODE_FAIL" in final.state_message
    assert status.reason in final.state_message, "the scheduler's own words are kept"
    assert not (workdir_of(final) / "runs.log").exists(), "the run was killed"


def test_node_failure_is_resubmitted_as_a_new_attempt(sched):
    echo_app(sched.env.root, "alpha")
    job_id = submit_balsam(balsam_message(), start=False)
    sched.faults(node_fail=True)
    run_to_submitted(job_id)
    poll_until(job_id, "PREPROCESSED")
    again = subjob(job_id)
    assert again.attempt == 2 and "resubmitting as attempt 2" in again.state_message
    sched.faults()
    site.submit.apply(args=(job_id,))  # what the poller's submit_again message does
    assert poll_until_ended(job_id).state == "JOB_FINISHED"
    assert [j["name"] for j in sched.jobs] == [batch_name(job_id), batch_name(job_id, 2)]


def test_submission_is_found_by_name_and_made_once(sched):
    echo_app(sched.env.root, "alpha")
    job_id = submit_balsam(balsam_message(), start=False)
    site.stage_in.apply(args=(job_id,))
    site.preprocess.apply(args=(job_id,))
    name = batch_name(job_id)
    assert sched.scheduler().find(name) is None
    token = "delivery-1"
    sched.faults(hold_queue=True)
    accepted = site_steps.submit(subjob(job_id), token)["batch_job_id"]  # then the worker died
    assert subjob(job_id).state == "PREPROCESSED"
    assert sched.scheduler().find(name) == accepted
    site.execute("submit", job_id, token=token)  # the same message, delivered again
    assert subjob(job_id).batch_job_id == accepted
    assert sched.submissions == 1
    sched.faults()
    final = poll_until_ended(job_id)
    assert final.state == "JOB_FINISHED"
    assert (workdir_of(final) / "runs.log").read_text() == "run\n"
    if sched.kind != "cobalt":  # Cobalt forgets a job once it has ended
        assert sched.scheduler().find(name) == accepted, "found after it ended, too"


def running(sched: Fake, job_id: int) -> str:
    """Submit through the steps and wait (asking the scheduler) until the job runs."""
    run_to_submitted(job_id)
    batch_id = subjob(job_id).batch_job_id
    wait_for(
        lambda: sched.scheduler().statuses([batch_id]).get(batch_id, QUEUED).state == RUNNING,
        10,
        "the batch job to run",
    )
    return batch_id


# How each scheduler shows a preemption: (state, cause) from statuses().
PREEMPTION = {
    "pbs": (FAILED, PREEMPTED),
    "torque": (FAILED, PREEMPTED),
    "cobalt": (FAILED, PREEMPTED),
    "condor": (QUEUED, ""),  # evicted: HTCondor runs it again itself
    "lsf": (FAILED, PREEMPTED),
    "sge": (FINISHED, ""),  # Grid Engine preempts by suspending; a kill reads as exit 137
}


def test_preemption_reads_as_each_scheduler_shows_it(sched):
    gated_app(sched.env.root)
    job_id = submit_balsam(balsam_message(app="gated"), start=False)
    batch_id = running(sched, job_id)
    sched.faults(preempt=True)
    status = sched.scheduler().statuses([batch_id])[batch_id]
    assert (status.state, status.cause) == PREEMPTION[sched.kind], status
    if sched.kind == "condor":
        sched.faults()
        (workdir_of(subjob(job_id)) / "go").touch()
        assert poll_until_ended(job_id).state == "JOB_FINISHED"
        (job,) = sched.jobs
        assert job["extra"]["starts"] == 1, "the same batch job ran a second time"


def test_cancel_ends_the_running_job(sched):
    gated_app(sched.env.root)
    job_id = submit_balsam(balsam_message(app="gated"), start=False)
    batch_id = running(sched, job_id)
    sched.scheduler().cancel(batch_id)
    (job,) = sched.jobs
    assert job["cause"] == "cancelled"
    status = sched.scheduler().statuses([batch_id])[batch_id]
    assert status.state in (FINISHED, FAILED), status
    assert not fake.alive(job), "the batch job's processes were killed"
    sched.scheduler().cancel(batch_id)  # again, after it ended: not an error


def live_jobs_named(sched: Fake, name: str) -> list[dict]:
    """The jobs of that name the fake still has queued or running."""
    return [j for j in sched.jobs if j["name"] == name and (j["state"] != "done" or fake.alive(j))]


@pytest.mark.parametrize("sched", ["pbs"], indirect=True)
def test_kill_between_the_schedulers_answer_and_the_commit_leaves_no_batch_job(sched, monkeypatch):
    gated_app(sched.env.root)
    job_id = submit_balsam(balsam_message(app="gated"), start=False)
    site.stage_in.apply(args=(job_id,))
    site.preprocess.apply(args=(job_id,))
    plugin = type(sched.scheduler())
    real_submit = plugin.submit

    def submit_then_kill(self, script_path, request):
        batch_id = real_submit(self, script_path, request)
        job_control.kill_subjob(job_id)
        return batch_id

    monkeypatch.setattr(plugin, "submit", submit_then_kill)
    captured_cancels(monkeypatch)  # the site's cancel is not what this test is about
    site.submit.apply(args=(job_id,))
    assert subjob(job_id).state == "KILLED"
    (job,) = sched.jobs
    assert job["name"] == batch_name(job_id) and job["cause"] == "cancelled"
    assert live_jobs_named(sched, batch_name(job_id)) == []


def test_kill_of_a_subjob_being_submitted_cancels_the_batch_job_found_by_name(sched, monkeypatch):
    """The scheduler accepted the batch job, then the submit's worker died before recording
    it: the site's cancel looks it up by the attempt's name."""
    gated_app(sched.env.root)
    job_id = submit_balsam(balsam_message(app="gated"), start=False)
    site.stage_in.apply(args=(job_id,))
    site.preprocess.apply(args=(job_id,))
    sched.faults(hold_queue=True)
    site_steps.submit(subjob(job_id), "delivery-1")
    cancels = captured_cancels(monkeypatch)
    assert job_control.kill_subjob(job_id) == 1
    assert cancels == [job_id]
    site.cancel.apply(args=(job_id,))  # what the site worker does with that message
    sched.faults()
    assert live_jobs_named(sched, batch_name(job_id)) == []
    (job,) = sched.jobs
    assert job["cause"] == "cancelled"
