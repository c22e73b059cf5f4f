"""All settings in one place: a TOML file, then environment overrides, validated once.

The file is ``$EDGECELERY_CONFIG`` or ``./edgecelery.toml``; without either the built-in
defaults describe a one-machine service (SQLite, Redis on localhost) with no sites. Any key can
be overridden the Celery way, from the environment: ``EDGECELERY_BROKER_URL`` sets
``broker_url`` and ``EDGECELERY_SITES__THETA__MAX_QUEUED=20`` sets ``sites.theta.max_queued``
(a double underscore descends one table; values are read as TOML scalars, else as strings).
Nothing site-specific lives in code.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from backends import registry
from edgeceleryapp.errors import ConfigurationError
from workflows.sources import template as source_template

ENV_PREFIX = "EDGECELERY_"
CONFIG_ENV = "EDGECELERY_CONFIG"


def _ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def _data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "edgecelery"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetrySettings(_Strict):
    """Back-off for transient errors: countdown = min(max, base * 2**n) with full jitter."""

    max_retries: int = Field(8, ge=0)
    backoff_base: float = Field(2.0, gt=0)
    backoff_max: float = Field(300.0, gt=0)


class SSHSettings(_Strict):
    """How a worker reaches a site's login node when it does not run there itself."""

    host: str
    port: int = Field(22, ge=1, le=65535)
    username: str
    key_file: Path
    # Host keys are always checked: the login node's key must be in this file.
    known_hosts: Path
    connect_timeout: float = Field(15.0, gt=0)


class SSHCredentials(_Strict):
    """Credentials for scp:// and sftp:// URLs (the host comes from the URL)."""

    username: str
    key_file: Path
    known_hosts: Path  # host keys are always checked
    port: int = Field(22, ge=1, le=65535)  # when the URL names none
    connect_timeout: float = Field(15.0, gt=0)


class TransferSettings(_Strict):
    """How a site (or the Argo service) moves data. Credentials come only from here, never
    from a job message."""

    # Allowed URL schemes; None allows every registered scheme.
    schemes: list[str] | None = None
    # A site's own transfer plug-ins: URL scheme -> dotted path of its class
    # (e.g. s3 = "mysite.transfers:S3Transfer").
    plugins: dict[str, str] = Field(default_factory=dict)
    # The remote hosts (http(s), sftp/scp, gsiftp/ftp, plug-ins) jobs may move data from and
    # to; empty, the default, allows no remote transfer at all.
    hosts: list[str] = Field(default_factory=list)
    checksum: Literal["sha256", "adler32"] = "sha256"
    ssh: SSHCredentials | None = None
    # gsiftp:// and ftp:// go through globus-url-copy: parallel streams, extra options.
    gridftp_parallel: int = Field(4, ge=1, le=64)
    gridftp_options: list[str] = Field(default_factory=list)
    x509_proxy: Path | None = None
    # https:// stage-in: a CA bundle (default: the system's).
    ca_file: Path | None = None
    timeout: float = Field(3600.0, gt=0)

    @field_validator("hosts")
    @classmethod
    def _host_names(cls, value: list[str]) -> list[str]:
        """Host names as URLs give them (lower case, no port, no brackets around IPv6)."""
        for host in value:
            if not host or (any(c in host for c in "/:@[] ") and not _ipv6(host)):
                raise ValueError(f"{host!r} is not a host name or address (no port, no path)")
        return [host.lower() for host in value]

    @field_validator("plugins")
    @classmethod
    def _dotted_paths(cls, value: dict[str, str]) -> dict[str, str]:
        for scheme, path in value.items():
            if not registry.DOTTED_PATH.match(path):
                raise ValueError(f"{scheme}: {path!r} is not a dotted path to a class")
        return value

    @model_validator(mode="after")
    def _known_schemes(self) -> TransferSettings:
        known = registry.TRANSFERS | self.plugins
        for scheme in self.schemes or []:
            if problem := registry.unknown("transfer scheme", scheme, known, paths=False):
                raise ValueError(f"schemes: {problem}")
        return self


class PilotSettings(_Strict):
    """Running a site's subjobs inside pilots: batch allocations whose launcher takes many
    subjobs (handed over through the shared file system), instead of one batch job each. The
    scheduler's own per-job cost then is paid once per pilot (docs/performance.md)."""

    enabled: bool = False
    # Pilots queued or running at once.
    max_pilots: int = Field(2, ge=1)
    # Bounds of one pilot's allocation: nodes, and wall time in minutes.
    min_nodes: int = Field(1, ge=1)
    max_nodes: int = Field(1, ge=1)
    min_wall_minutes: int = Field(10, ge=1)
    max_wall_minutes: int = Field(60, ge=1)
    # How many processes one node runs at once: a single-node subjob takes its
    # processes_per_node of them, so several share a node; a multi-node subjob takes whole nodes.
    slots_per_node: int = Field(1, ge=1)
    # A pilot with no work for this long ends (its allocation is given back).
    idle_exit_seconds: float = Field(60.0, gt=0)
    # A running pilot whose heartbeat file is older than this is taken for dead.
    heartbeat_timeout: float = Field(60.0, gt=0)
    # The command that starts the launcher in the allocation (``pilot run <dir>`` follows);
    # empty: this Python with ``-m edgeceleryapp.cli``, as on a login node sharing its
    # file system with the compute nodes.
    command: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _bounds(self) -> PilotSettings:
        if self.min_nodes > self.max_nodes:
            raise ValueError(f"min_nodes {self.min_nodes} is above max_nodes {self.max_nodes}")
        if self.min_wall_minutes > self.max_wall_minutes:
            raise ValueError(
                f"min_wall_minutes {self.min_wall_minutes} is above "
                f"max_wall_minutes {self.max_wall_minutes}"
            )
        return self


class SiteSettings(_Strict):
    """One Balsam site: where its jobs run and how its scheduler is reached."""

    scheduler: str = "local"
    runner: str = "local"
    ssh: SSHSettings | None = None  # required when runner = "ssh"
    workdir: Path
    queue: str = ""
    project: str = ""
    # How often the exit-code files of jobs in flight are read (cheap, local to the site)...
    poll_interval: float = Field(5.0, gt=0)
    # ...and how often the scheduler itself is asked, in one command for all of them.
    status_interval: float = Field(30.0, gt=0)
    # A batch job the scheduler no longer knows and that left no exit code is called lost
    # only after this long, never assumed done.
    lost_after: float = Field(300.0, gt=0)
    # Extra local directories that local:// and file:// URLs of this site's jobs may name.
    transfer_roots: list[Path] = Field(default_factory=list)
    transfers: TransferSettings = Field(default_factory=TransferSettings)
    command_timeout: float = Field(120.0, gt=0)
    # An argument list that prefixes the application (e.g. ["mpirun", "-n", "{total_procs}"]).
    launcher: list[str] = Field(default_factory=list)
    # The scheduler_config values this site approves, each the options it stands for
    # (e.g. "knl.cfg" = ["--constraint=knl"]). A job names one; it never supplies options.
    scheduler_configs: dict[str, list[str]] = Field(default_factory=dict)
    # Options every batch job of this site gets (e.g. ["--account=myproj"]).
    scheduler_options: list[str] = Field(default_factory=list)
    # The scheduler keeps ended jobs in an accounting database (Slurm's sacct): status and
    # look-ups ask it instead of the live queue.
    accounting: bool = False
    # Resource-side causes that earn a new attempt, and how many attempts a subjob may have.
    resubmit_on: list[str] = Field(
        default_factory=lambda: ["NODE_FAIL", "BOOT_FAIL", "PREEMPTED", "PILOT_ENDED"]
    )
    max_attempts: int = Field(3, ge=1)
    # Queue footprint (see edgeceleryapp/throttle.py): a hard cap and/or aCT's a * running + b.
    max_queued: int | None = Field(None, ge=1)
    queued_per_running: float | None = Field(None, ge=0)
    queued_base: int | None = Field(None, ge=0)
    # Circuit breaker: after this many submission failures in a row, rest the site.
    breaker_threshold: int = Field(5, ge=1)
    breaker_cooldown: float = Field(300.0, gt=0)
    # Subjobs run inside pilots (see PilotSettings); off: one batch job per subjob.
    pilots: PilotSettings = Field(default_factory=PilotSettings)

    @field_validator("scheduler", "runner")
    @classmethod
    def _registered(cls, value: str, info: ValidationInfo) -> str:
        table = registry.SCHEDULERS if info.field_name == "scheduler" else registry.RUNNERS
        if problem := registry.unknown(str(info.field_name), value, table):
            raise ValueError(problem)
        return value

    @field_validator("workdir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError("must be an absolute path")
        return value


class ArgoSettings(_Strict):
    """The central service's staging area (HUST'17 Figure 1: the data transfer server)."""

    staging_dir: Path = Field(default_factory=lambda: _data_home() / "argo")
    # How sites reach the staging area; defaults to local://<staging_dir> (one machine).
    staging_url: str = ""
    # Local directories the Argo job's own input_url and output_url may name.
    transfer_roots: list[Path] = Field(default_factory=list)
    transfers: TransferSettings = Field(default_factory=TransferSettings)
    # The most subjobs one Argo job may have (children added at run time included).
    max_subjobs: int = Field(1000, ge=1, le=100_000)

    def staging_url_for(self, *parts: str) -> str:
        base = self.staging_url or f"local://{self.staging_dir}"
        return "/".join([base.rstrip("/"), *parts])


class WebSettings(_Strict):
    """The job browser (``edgecelery web``). It refuses to start without users and a cookie
    secret: it can change and delete jobs, so it is never open by default."""

    host: str = "127.0.0.1"
    port: int = Field(5556, ge=0, le=65535)
    # user name -> password hash made by ``edgecelery web hash-password`` (PBKDF2-SHA256).
    users: dict[str, str] = Field(default_factory=dict)
    # Users who may change a job's state or delete it; everyone else only reads.
    editors: list[str] = Field(default_factory=list)
    # Signs the login cookie; 32+ random characters, kept secret (e.g. `openssl rand -hex 32`).
    cookie_secret: str = ""
    # Send the login cookie over HTTPS only (set when a TLS proxy fronts the browser).
    secure_cookies: bool = False
    # Hours a login lasts.
    session_hours: float = Field(12.0, gt=0)
    page_size: int = Field(50, ge=1, le=1000)
    # Failed logins allowed per user name, and per client address (an IPv6 /64), before the
    # browser answers 429 without checking the password; the allowance refills over
    # ``login_window`` seconds.
    login_attempts: int = Field(5, ge=1)
    login_attempts_per_address: int = Field(20, ge=1)
    login_window: float = Field(300.0, gt=0)
    # Threads that check passwords (PBKDF2), apart from those that serve database calls.
    login_threads: int = Field(2, ge=1, le=64)


class FlowerSettings(_Strict):
    """The live task dashboard (``edgecelery flower``), with authentication on by default."""

    host: str = "127.0.0.1"
    port: int = Field(5555, ge=0, le=65535)
    # "user:password" pairs for HTTP basic authentication.
    basic_auth: list[str] = Field(default_factory=list)
    # Persistent state (task history across restarts) is kept here.
    db: Path = Field(default_factory=lambda: _data_home() / "flower.db")
    # How many tasks Flower keeps in memory and on disk; older ones are dropped.
    max_tasks: int = Field(10000, ge=1)
    # Serve under this path behind a reverse proxy (e.g. "flower").
    url_prefix: str = ""

    @field_validator("basic_auth")
    @classmethod
    def _pairs(cls, value: list[str]) -> list[str]:
        for pair in value:
            user, sep, password = pair.partition(":")
            if not (sep and user and password):
                raise ValueError("each entry must be 'user:password'")
        return value


class MailSettings(_Strict):
    """Status mail to an Argo job's ``email`` list (see edgeceleryapp/mail_content.py)."""

    enabled: bool = False
    smtp_host: str = "localhost"
    smtp_port: int = Field(587, ge=1, le=65535)
    # "starttls" (port 587), "ssl" (implicit TLS, port 465), or "none" (a local relay only).
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str = ""
    password: str = ""
    # CA bundle that signs the SMTP server's certificate (default: the system's).
    ca_file: Path | None = None
    sender: str = "edgecelery@localhost"
    # "ended": when the Argo job ends (HISTORY, KILLED or a failure state); "every": every change.
    on: Literal["ended", "every"] = "ended"
    # Seconds to gather a job's events into one mail: a burst of changes makes one mail.
    batch_window: float = Field(30.0, ge=0)
    # The queue, bound to the status exchange, that the argo worker reads mail events from.
    queue: str = "edgecelery.mail"
    timeout: float = Field(30.0, gt=0)


def _parsed_template(text: str) -> str:
    source_template.parse(text)  # a TemplateError is a ValueError: pydantic names the key
    return text


class SourceSettings(_Strict):
    """A job source besides the intake queue (``[[sources]]``; workflows/sources/), polled by
    the argo worker. Its jobs take the intake's path; what it refuses is kept as a dead letter
    under its name (``edgecelery intake dead-letters ls --source NAME``)."""

    # Names the source in logs, dead letters and the ids of its jobs.
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,15}$")
    # Seconds between looks when the last one found nothing: half of it is added, on
    # average, to every job's start. A look that finds a full batch looks again at once.
    poll_interval: float = Field(0.2, gt=0, le=3600)
    # The most items one look takes (one transaction, one broker round trip).
    batch: int = Field(100, ge=1, le=1000)

    @field_validator("name")
    @classmethod
    def _not_a_consumer(cls, value: str) -> str:
        if value in ("intake", "mail"):
            raise ValueError(f"{value!r} names a queue consumer's dead letters; choose another")
        return value


class SQLSourceSettings(SourceSettings):
    """Rows of a database (an experiment's shot table, HUST'17 section 3): each new row makes
    one Argo job, once, across restarts."""

    kind: Literal["sql"]
    # A SQLAlchemy URL (sqlite:////data/shots.db, postgresql+psycopg://reader@db/exp).
    url: str
    # Selects the rows after the last one taken, in key order: it must use the bound
    # parameters :after (the last key taken) and :limit, e.g.
    # "SELECT shot, machine FROM shots WHERE shot > :after ORDER BY shot LIMIT :limit".
    query: str
    # The column that orders rows and names each one (an integer or text, unique).
    key: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # Rows with a key above this are new when the source first starts.
    start_after: int | str = 0
    # The Argo job message as JSON; "{column}" is replaced by the row's value
    # (workflows/sources/template.py).
    template: Annotated[str, AfterValidator(_parsed_template)]

    @field_validator("url")
    @classmethod
    def _sqlalchemy_url(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"not a SQLAlchemy URL: {exc}") from None
        return value

    @field_validator("query")
    @classmethod
    def _bound_parameters(cls, value: str) -> str:
        for name in (":after", ":limit"):
            if not re.search(rf"{name}\b", value):
                raise ValueError(f"must use the bound parameter {name}")
        return value


class DirectorySourceSettings(SourceSettings):
    """A folder where ``*.json`` files dropped in become Argo jobs (``taken/`` afterwards,
    ``refused/`` with a ``.why`` when refused). Write a file under another name (one that
    does not end in .json, or starts with a dot) and rename it: a rename is atomic."""

    kind: Literal["directory"]
    path: Path

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError("must be an absolute path")
        return value


JobSourceSettings = Annotated[
    SQLSourceSettings | DirectorySourceSettings, Field(discriminator="kind")
]


BROKER_SCHEMES = {"redis": False, "rediss": True, "amqp": False, "amqps": True, "memory": False}
LOOPBACK_HOSTS = ("localhost", "::1")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: traffic that never leaves the machine."""
    return host.lower() in LOOPBACK_HOSTS or host.startswith("127.")


class BrokerSettings(_Strict):
    """How every process (workers, our publishers and consumers, ``watch``, Flower) reaches
    the broker: TLS for ``rediss://`` and ``amqps://``, verified unless told otherwise, and on
    RabbitMQ a login by client certificate (the HUST'17 paper's grid certificates)."""

    # CA bundle that signs the broker's certificate (default: the system's).
    ca_file: Path | None = None
    # This process's client certificate and key (Redis tls-auth-clients, RabbitMQ EXTERNAL).
    cert_file: Path | None = None
    key_file: Path | None = None
    # Check the broker's certificate chain and that it names broker_url's host.
    verify: bool = True
    check_hostname: bool = True
    # Plaintext (redis://, amqp://) to a host other than loopback, or TLS without
    # verification, is refused unless this is true.
    allow_plaintext: bool = False
    # RabbitMQ: "certificate" logs in as the client certificate's common name (SASL EXTERNAL,
    # plug-in rabbitmq_auth_mechanism_ssl); "password" uses the URL's user and password.
    login: Literal["password", "certificate"] = "password"
    # RabbitMQ's management API, for Flower's Broker page (queue lengths); e.g.
    # "http://flower:secret@127.0.0.1:15672/api/". Redis needs none.
    management_url: str = ""


class Settings(_Strict):
    broker_url: str = "redis://127.0.0.1:6379/0"
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    database_url: str = Field(default_factory=lambda: f"sqlite:///{_data_home() / 'edgecelery.db'}")
    status_exchange: str = "edgecelery.status"
    # Production systems put Argo job messages (plain JSON) on this queue (the HUST'17 paper, 2.2.1,
    # the UserJobReceiver); the argo worker consumes it.
    intake_queue: str = "argo.jobs"
    # Intake messages taken together: stored in one transaction, their first tasks and status
    # messages sent in one broker round trip (bench/intake.py).
    intake_batch: int = Field(100, ge=1, le=1000)
    # The largest message the intake and mail consumers read; a larger one is refused unread
    # and set aside (first this many bytes kept) as a dead letter (workflows/inbound.py).
    message_max_bytes: int = Field(256 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Routing key for status messages of jobs that name none (Balsam-only jobs have no
    # job_status_routing_key field).
    default_status_routing_key: str = "job_status"
    # Seconds after which a status message that did not go out (broker away, worker killed
    # before marking it sent) is sent again by the argo worker's sweep, which runs this often.
    status_resend_after: float = Field(10.0, gt=0)
    # Redis: how long an unacknowledged task waits before it is delivered again. A countdown
    # (a retry's back-off, the mail window) must stay under half of it, or Redis delivers the
    # waiting task early. A killed worker's work does not wait for it: the reconciler sends it
    # again (redrive_after).
    visibility_timeout: float = Field(900.0, gt=0)
    # How long a step's lease lasts without renewal (renewed every third of it while the step
    # works): a killed worker's step is free to run again this long after its last renewal.
    lease_seconds: float = Field(30.0, ge=3)
    # A record resting where a step is owed, with no live lease and no progress (no move, no
    # message due) for this long, gets its step sent again by the reconciler.
    redrive_after: float = Field(45.0, ge=5)
    # The most records one sweep re-drives (oldest first), and waiting subjobs one tick admits
    # at a site without a queue limit.
    redrive_batch: int = Field(200, ge=1)
    worker_concurrency: int = Field(2, ge=1)
    # Part of every batch job name (see edgeceleryapp/batch_names.py); random per database if unset.
    instance_tag: str = Field("", pattern=r"^[a-z0-9]{0,8}$")
    retry: RetrySettings = Field(default_factory=RetrySettings)
    argo: ArgoSettings = Field(default_factory=ArgoSettings)
    sites: dict[str, SiteSettings] = Field(default_factory=dict)
    web: WebSettings = Field(default_factory=WebSettings)
    flower: FlowerSettings = Field(default_factory=FlowerSettings)
    mail: MailSettings = Field(default_factory=MailSettings)
    # Job sources besides the intake queue, run by the argo worker.
    sources: list[JobSourceSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _broker_is_safe(self) -> Settings:
        """A broker on another host is reached over verified TLS, or plaintext by choice."""
        scheme, sep, _ = self.broker_url.partition("://")
        scheme = scheme.lower()
        if not sep or scheme not in BROKER_SCHEMES:
            raise ValueError(
                f"broker_url: scheme {scheme!r} is not one of {', '.join(sorted(BROKER_SCHEMES))}"
            )
        tls = BROKER_SCHEMES[scheme]
        broker = self.broker
        if scheme == "memory":
            return self
        host = urlsplit(self.broker_url).hostname or "localhost"
        if not tls and not broker.allow_plaintext and not is_loopback(host):
            raise ValueError(
                f"broker_url: {scheme}:// to {host} sends messages and credentials in "
                f"plaintext; use {scheme}s:// or set broker.allow_plaintext = true"
            )
        tls_files = [n for n in ("ca_file", "cert_file", "key_file") if getattr(broker, n)]
        if not tls and tls_files:
            raise ValueError(
                f"broker.{tls_files[0]} is set but broker_url is plaintext ({scheme}://); "
                f"use {scheme}s://"
            )
        if tls and not (broker.verify and broker.check_hostname) and not broker.allow_plaintext:
            raise ValueError(
                "broker.verify and broker.check_hostname: TLS without verification lets anyone "
                "on the path read the messages; set broker.allow_plaintext = true to accept that"
            )
        for name in tls_files:
            path = getattr(broker, name)
            if not path.is_file():
                raise ValueError(f"broker.{name}: {path} is not a readable file")
        if broker.key_file and not broker.cert_file:
            raise ValueError("broker.key_file: given without broker.cert_file")
        if broker.login == "certificate" and not (scheme == "amqps" and broker.cert_file):
            raise ValueError(
                'broker.login = "certificate" needs an amqps:// broker_url and broker.cert_file'
            )
        return self

    @model_validator(mode="after")
    def _countdowns_fit_redelivery(self) -> Settings:
        """Redis delivers an unacknowledged task again after visibility_timeout, a task
        waiting for its countdown included: a countdown that long runs twice."""
        limit = self.visibility_timeout / 2
        countdowns = [("retry.backoff_max", self.retry.backoff_max)]
        if self.mail.enabled:
            countdowns.append(("mail.batch_window", self.mail.batch_window))
        for name, value in countdowns:
            if value > limit:
                raise ValueError(
                    f"{name} = {value:g} s must not exceed half of visibility_timeout "
                    f"({self.visibility_timeout:g} s): Redis would deliver the waiting task "
                    "again before it is due"
                )
        if self.redrive_after <= self.lease_seconds / 3:
            raise ValueError(
                f"redrive_after = {self.redrive_after:g} s must exceed a third of lease_seconds"
                f" ({self.lease_seconds:g} s), the period leases are renewed in"
            )
        return self

    @model_validator(mode="after")
    def _staging_host_allowed(self) -> Settings:
        """Every Argo job's data pass through a remote staging area: each site must be allowed
        to reach its host, or every job would fail at its first transfer."""
        parts = urlsplit(self.argo.staging_url)
        if self.argo.staging_url and parts.scheme.lower() not in ("local", "file"):
            host = (parts.hostname or "").lower()
            for name, site in self.sites.items():
                if host not in site.transfers.hosts:
                    raise ValueError(
                        f"sites.{name}.transfers.hosts must list {host!r}, the host of "
                        "argo.staging_url"
                    )
        return self

    @model_validator(mode="after")
    def _source_names_unique(self) -> Settings:
        names = [source.name for source in self.sources]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"sources[{i}].name: {name!r} names two sources")
        return self

    def site(self, name: str) -> SiteSettings:
        try:
            return self.sites[name]
        except KeyError:
            known = ", ".join(sorted(self.sites)) or "none"
            raise ConfigurationError(
                f"sites.{name}: no such site (known: {known}); {settings_source()}"
            ) from None


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_env(data: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    """Overlay ``EDGECELERY_A__B=value`` variables onto the parsed file."""
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key == CONFIG_ENV:
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigurationError(f"{key}: {part} is not a table")
        node[path[-1]] = _parse_env_value(raw)
    return data


def config_path(environ: dict[str, str] | None = None) -> Path | None:
    """The settings file: ``$EDGECELERY_CONFIG``, else ``./edgecelery.toml`` if it exists."""
    named = (os.environ if environ is None else environ).get(CONFIG_ENV)
    if named:
        return Path(named)
    default = Path("edgecelery.toml")
    return default if default.exists() else None


def settings_source(environ: dict[str, str] | None = None) -> str:
    """Which file the settings come from, in words: a command that cannot find a site or
    reach a broker says so, since the usual cause is a different file than the one meant."""
    path = config_path(environ)
    if path is None:
        return (
            f"no settings file found (${CONFIG_ENV} unset, no ./edgecelery.toml): "
            "built-in defaults used"
        )
    return f"settings read from {path.resolve()}"


def load_settings(path: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    environ = dict(os.environ if environ is None else environ)
    if path is None:
        path = config_path(environ)
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigurationError(f"settings file {path} does not exist") from None
        except IsADirectoryError:
            raise ConfigurationError(f"settings file {path} is a directory") from None
        except OSError as exc:
            raise ConfigurationError(
                f"settings file {path} cannot be read: {exc.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise ConfigurationError(f"settings file {path} is not UTF-8 text") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{path}: {exc}") from None
    data = apply_env(data, environ)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"settings: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()


def reset_settings() -> None:
    """Forget the cached settings (tests, and the CLI after it writes a config)."""
    get_settings.cache_clear()
