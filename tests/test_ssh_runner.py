"""The SSH runner against a real sshd on 127.0.0.1 (Debian's openssh-server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backends.runners import ssh as ssh_runner
from backends.runners.ssh import SSHRunner, remote_command
from edgeceleryapp.errors import PermanentError, TransientError
from edgeceleryapp.settings import SiteSettings, SSHSettings, reset_settings
from tasks import site
from tests.helpers import balsam_message, poll_until_ended, script, subjob
from tests.sshd import keygen, start_sshd
from workflows.intake import submit_balsam


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def fresh_connections():
    yield
    for client in ssh_runner.connections.clients.values():
        client.close()
    ssh_runner.connections.clients.clear()


def site_over(server, tmp_path: Path, **ssh) -> SiteSettings:
    settings = {
        "host": "127.0.0.1",
        "port": server.port,
        "username": server.username,
        "key_file": server.client_key,
        "known_hosts": server.known_hosts,
        **ssh,
    }
    return SiteSettings(
        workdir=tmp_path, runner="ssh", ssh=SSHSettings(**settings), command_timeout=10
    )


def test_remote_command_quotes_every_part():
    assert remote_command(["printf", "%s\n", "a b", "$(x)"], "/w d", {"K": "v w"}) == (
        "cd -- '/w d' && env 'K=v w' printf '%s\n' 'a b' '$(x)'"
    )


def test_arguments_cwd_and_environment_arrive_literally(sshd, tmp_path):
    canary = tmp_path / "CANARY"
    hostile = ["; touch " + str(canary), "$(touch " + str(canary) + ")", "`id`", "a\nb", "'\""]
    runner = SSHRunner(site_over(sshd, tmp_path))
    result = runner.run(
        [
            "python3",
            "-c",
            "import json,os,sys; print(json.dumps("
            "[sys.argv[1:], os.getcwd(), os.environ.get('EC_X')]))",
            *hostile,
        ],
        cwd=str(tmp_path),
        env={"EC_X": "$(touch " + str(canary) + ")"},
    )
    assert result.ok, result.stderr
    args, cwd, env_value = json.loads(result.stdout)
    assert args == hostile
    assert cwd == str(tmp_path)
    assert env_value == "$(touch " + str(canary) + ")"
    assert not canary.exists()


def test_one_connection_is_reused(sshd, tmp_path):
    runner = SSHRunner(site_over(sshd, tmp_path))
    runner.run(["true"])
    transport = ssh_runner.connections.clients[runner.key].get_transport()
    SSHRunner(site_over(sshd, tmp_path)).run(["true"])
    assert ssh_runner.connections.clients[runner.key].get_transport() is transport


def test_a_dropped_connection_is_opened_again(sshd, tmp_path):
    runner = SSHRunner(site_over(sshd, tmp_path))
    runner.run(["true"])
    ssh_runner.connections.clients[runner.key].get_transport().close()
    assert runner.run(["echo", "again"]).stdout == "again\n"


def test_exit_status_and_output_come_back(sshd, tmp_path):
    result = SSHRunner(site_over(sshd, tmp_path)).run(
        ["sh", "-c", "echo out; echo err >&2; exit 3"]
    )
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")


def test_a_command_past_its_time_out_is_transient_and_the_next_works(sshd, tmp_path):
    runner = SSHRunner(site_over(sshd, tmp_path))
    with pytest.raises(TransientError, match=r"no answer within 0\.5s"):
        runner.run(["sleep", "5"], timeout=0.5)
    assert runner.run(["echo", "ok"]).stdout == "ok\n"


def test_unknown_host_key_is_refused(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(PermanentError, match="host key unknown"):
        SSHRunner(site_over(sshd, tmp_path, known_hosts=empty)).run(["true"])


def test_a_changed_host_key_is_refused(sshd, tmp_path):
    other = keygen(tmp_path / "other_host").with_suffix(".pub").read_text().split()
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    with pytest.raises(PermanentError, match="host key does not match"):
        SSHRunner(site_over(sshd, tmp_path, known_hosts=wrong)).run(["true"])


def test_an_unauthorised_key_is_refused(sshd, tmp_path):
    stranger = keygen(tmp_path / "stranger")
    with pytest.raises(PermanentError, match="authentication refused"):
        SSHRunner(site_over(sshd, tmp_path, key_file=stranger)).run(["true"])


def test_connection_refused_is_transient(sshd, tmp_path):
    from edgeceleryapp.devstack import free_port

    with pytest.raises(TransientError):
        SSHRunner(site_over(sshd, tmp_path, port=free_port(), connect_timeout=2)).run(["true"])


def test_a_site_reached_over_ssh_runs_its_scripts_there(env, sshd):
    """config_script and preprocess run through the SSH runner (SSH_CONNECTION is set)."""
    text = env.config.read_text().replace(
        "[sites.alpha]\n",
        '[sites.alpha]\nrunner = "ssh"\n',
    ) + (
        f'[sites.alpha.ssh]\nhost = "127.0.0.1"\nport = {sshd.port}\nusername = "root"\n'
        f'key_file = "{sshd.client_key}"\nknown_hosts = "{sshd.known_hosts}"\n'
    )
    env.config.write_text(text)
    reset_settings()
    exe = script(env.root / "apps" / "app.py", "open('ran', 'w').write('yes')\n")
    pre = script(env.root / "apps" / "pre.sh", 'echo "$SSH_CONNECTION" > via-ssh\n', python=False)
    cfg = script(env.root / "apps" / "cfg.py", "print('[\"--x\"]')\n")
    from edgeceleryapp import applications

    applications.add_app("remote", "alpha", exe, preprocess=pre, config_script=cfg)
    job_id = submit_balsam(balsam_message(app="remote"), start=False)
    for step in ("stage_in", "preprocess", "submit"):
        site.execute(step, job_id, token="t")
    final = poll_until_ended(job_id)
    assert final.state == "JOB_FINISHED"
    workdir = env.site_workdir("alpha") / "jobs" / str(job_id)
    assert (workdir / "via-ssh").read_text().startswith("127.0.0.1 ")
    assert subjob(job_id).command == [exe, "--x"]
