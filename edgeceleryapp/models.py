"""SQLAlchemy 2 records. Field names are the paper's (000 sections 2.1.1, 2.1.2, 2.2.1)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Row
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


# Columns the service keeps for itself (claims, bookkeeping): not shown to users.
INTERNAL = {"internal": True}


def public_columns(model: type[Base]) -> tuple[str, ...]:
    """The columns users see of a record (``edgecelery argo show``, the job browser, the API),
    in table order: every column not marked INTERNAL."""
    return tuple(
        c.name
        for c in model.__table__.columns
        if not c.info.get("internal")  # type: ignore[attr-defined]
    )


class ArgoJob(Base):
    """An ordered chain of subjobs across sites (the HUST'17 paper, 2.2.1)."""

    __tablename__ = "argo_jobs"
    # The job browser filters and sorts on these at 100,000 jobs and more; each ends in the id
    # so a filtered page comes out of the index already in order.
    __table_args__ = (
        Index("ix_argo_jobs_state_id", "state", "id"),
        Index("ix_argo_jobs_group_id", "group_identifier", "id"),
        Index("ix_argo_jobs_updated_id", "updated_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(256), default="")
    name: Mapped[str] = mapped_column(String(256), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    group_identifier: Mapped[str] = mapped_column(String(256), default="", index=True)
    username: Mapped[str] = mapped_column(String(256), default="")
    email: Mapped[str] = mapped_column(Text, default="")
    input_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    output_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    job_status_routing_key: Mapped[str] = mapped_column(String(256), default="")
    state: Mapped[str] = mapped_column(String(40), default="CREATED", index=True)
    state_message: Mapped[str] = mapped_column(Text, default="")
    current_subjob: Mapped[int] = mapped_column(Integer, default=0)
    # The producer's message id when the job came from the intake queue: a message delivered
    # twice creates one job.
    intake_key: Mapped[str | None] = mapped_column(
        String(256), nullable=True, unique=True, info=INTERNAL
    )
    num_subjobs: Mapped[int] = mapped_column(Integer, default=0)
    # A graph job (its subjobs name their ``parents``; edgeceleryapp/graph.py): NULL for the
    # linear SUBJOB_* loop. ``open_subjobs`` counts its subjobs not yet finished and
    # ``stuck_subjobs`` those failed or BLOCKED, kept in the moves' own transactions: the job
    # is complete at 0 open, and failed when every open one is stuck, without reading them.
    graph: Mapped[bool | None] = mapped_column(nullable=True)
    open_subjobs: Mapped[int | None] = mapped_column(Integer, nullable=True, info=INTERNAL)
    stuck_subjobs: Mapped[int | None] = mapped_column(Integer, nullable=True, info=INTERNAL)
    # Which execution of a step works on the record now, and until when (renewed while it
    # works): a second delivery finds the lease and ends quietly (edgeceleryapp/leases.py).
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True, info=INTERNAL)
    lease_until: Mapped[datetime | None] = mapped_column(nullable=True, info=INTERNAL)
    # When a message was last sent for the record without a state change (a re-drive, a retry
    # after back-off: then the time it is due): the reconciler waits for it before re-driving.
    dispatched_at: Mapped[datetime | None] = mapped_column(nullable=True, info=INTERNAL)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    subjobs: Mapped[list[SubJob]] = relationship(
        back_populates="argo_job", order_by="SubJob.position", cascade="all, delete-orphan"
    )


class SubJob(Base):
    """A Balsam job: one application run through one site's batch scheduler (2.1.1)."""

    __tablename__ = "subjobs"
    __table_args__ = (
        Index("ix_subjobs_site_state", "site", "state"),
        # A site's PREPROCESSED subjobs that are not parked, found without reading the
        # thousands that may be (the queue limit's counts: tasks/admission.py, site_steps.py).
        Index("ix_subjobs_site_state_waiting", "site", "state", "waiting_since"),
        # The job browser's "jobs with a subjob at this site".
        Index("ix_subjobs_site_argo", "site", "argo_job_id"),
        # A graph job's ready subjobs (CREATED, no parent left to finish): argo.advance's
        # one query per decision, whatever the job's size (edgeceleryapp/graph.py).
        Index("ix_subjobs_ready", "argo_job_id", "state", "parents_left", "dispatched_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    argo_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("argo_jobs.id", ondelete="CASCADE"), nullable=True, index=True
    )
    position: Mapped[int] = mapped_column(Integer, default=0)
    name: Mapped[str] = mapped_column(String(256), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    site: Mapped[str] = mapped_column(String(128))
    # Candidate sites (a message's ``sites``): ``site`` holds the first until the hand-off
    # chooses one (edgeceleryapp/site_handoff.py) and stamps ``site_chosen_at``, once.
    sites: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    site_chosen_at: Mapped[datetime | None] = mapped_column(nullable=True, info=INTERNAL)
    queue: Mapped[str | None] = mapped_column(String(128), nullable=True)
    project: Mapped[str | None] = mapped_column(String(128), nullable=True)
    wall_time_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    num_nodes: Mapped[int] = mapped_column(Integer, default=1)
    processes_per_node: Mapped[int] = mapped_column(Integer, default=1)
    scheduler_config: Mapped[str | None] = mapped_column(Text, nullable=True)
    application: Mapped[str] = mapped_column(String(256))
    config_file: Mapped[str | None] = mapped_column(Text, nullable=True)
    input_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    output_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    # A Balsam job message may carry the id of an Argo job run elsewhere (HUST'17 slides); kept as
    # given and reported back in status messages, never mistaken for one of ours.
    origin_argo_job_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # In a graph job, how many of its parents have not finished yet (0: ready); NULL in a
    # linear job. Lowered in the transaction that finishes each parent.
    parents_left: Mapped[int | None] = mapped_column(Integer, nullable=True, info=INTERNAL)

    state: Mapped[str] = mapped_column(String(40), default="CREATED")
    state_message: Mapped[str] = mapped_column(Text, default="")
    # Batch bookkeeping. The scheduler is the source of truth; this is what we know of it.
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    batch_job_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Bytes moved so far by the transfer under way (recorded every few seconds).
    transfer_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    command: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # Single submitter per attempt: who holds the right to call the scheduler, and since when.
    submit_claim: Mapped[str | None] = mapped_column(String(64), nullable=True, info=INTERNAL)
    submit_claimed_at: Mapped[datetime | None] = mapped_column(nullable=True, info=INTERNAL)
    submitted_at: Mapped[datetime | None] = mapped_column(nullable=True, info=INTERNAL)
    # Which execution of a step works on the record now, and until when (renewed while it
    # works): a second delivery finds the lease and ends quietly (edgeceleryapp/leases.py).
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True, info=INTERNAL)
    lease_until: Mapped[datetime | None] = mapped_column(nullable=True, info=INTERNAL)
    # When a message was last sent for the record without a state change (a re-drive, a retry
    # after back-off: then the time it is due): the reconciler waits for it before re-driving.
    dispatched_at: Mapped[datetime | None] = mapped_column(nullable=True, info=INTERNAL)
    # Since when the subjob waits for the site to admit it (queue limit, resting site): it is
    # parked, with no message; the site's tick admits waiting subjobs in submission order.
    waiting_since: Mapped[datetime | None] = mapped_column(nullable=True, info=INTERNAL)
    # At a site running pilots: the pilot this attempt was assigned to (tasks/pilots.py).
    pilot_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    argo_job: Mapped[ArgoJob | None] = relationship(back_populates="subjobs")


class Pilot(Base):
    """A pilot: one batch allocation whose launcher runs many subjobs (tasks/pilots.py). The
    scheduler is the source of truth for its batch job; the launcher's files in ``directory``
    for what runs inside it."""

    __tablename__ = "pilots"
    __table_args__ = (Index("ix_pilots_site_state", "site", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site: Mapped[str] = mapped_column(String(128))
    # QUEUED (submitted), RUNNING (its launcher's heartbeat seen), ENDED.
    state: Mapped[str] = mapped_column(String(16), default="QUEUED")
    batch_job_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    nodes: Mapped[int] = mapped_column(Integer, default=1)
    slots_per_node: Mapped[int] = mapped_column(Integer, default=1)
    wall_time_minutes: Mapped[int] = mapped_column(Integer, default=10)
    directory: Mapped[str] = mapped_column(Text, default="")
    # Why this size (the sizer's reason), and why it ended.
    reason: Mapped[str] = mapped_column(Text, default="")
    end_reason: Mapped[str] = mapped_column(Text, default="")
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # The modification time of the launcher's heartbeat file when last read.
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)


# The subjob columns copied as they are from a job message's fields of the same name.
MESSAGE_FIELDS = (
    "name",
    "description",
    "site",
    "sites",
    "queue",
    "project",
    "wall_time_minutes",
    "num_nodes",
    "processes_per_node",
    "scheduler_config",
    "application",
    "config_file",
)


class SubjobParent(Base):
    """One edge of a graph job: ``child_id`` waits for ``parent_id`` to finish. Found from
    either end through an index: a finishing parent's children, a subjob's parents."""

    __tablename__ = "subjob_parents"
    __table_args__ = (Index("ix_subjob_parents_parent", "parent_id", "child_id"),)

    child_id: Mapped[int] = mapped_column(
        ForeignKey("subjobs.id", ondelete="CASCADE"), primary_key=True
    )
    parent_id: Mapped[int] = mapped_column(
        ForeignKey("subjobs.id", ondelete="CASCADE"), primary_key=True
    )
    argo_job_id: Mapped[int] = mapped_column(Integer, index=True)


class Application(Base):
    """A per-site whitelisted application (2.1.2). Only these ever run."""

    __tablename__ = "applications"
    __table_args__ = (UniqueConstraint("name", "site"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    site: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    executable: Mapped[str] = mapped_column(Text)
    config_script: Mapped[str | None] = mapped_column(Text, nullable=True)
    preprocess: Mapped[str | None] = mapped_column(Text, nullable=True)
    postprocess: Mapped[str | None] = mapped_column(Text, nullable=True)


class JobEvent(Base):
    """Append-only provenance: every state change of a subjob or Argo job, in order."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    argo_job_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    subjob_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    from_state: Mapped[str] = mapped_column(String(40))
    to_state: Mapped[str] = mapped_column(String(40))
    time: Mapped[datetime] = mapped_column(default=utcnow)
    message: Mapped[str] = mapped_column(Text, default="")
    published: Mapped[bool] = mapped_column(default=False, info=INTERNAL)

    # Only the few events not yet marked sent are in it: the status sweep finds them without
    # reading millions of rows (edgeceleryapp/status_outbox.py).
    __table_args__ = (
        Index(
            "ix_job_events_unpublished",
            "id",
            sqlite_where=text("published = 0"),
            postgresql_where=text("published = false"),
        ),
    )


class SiteMonitor(Base):
    """Per-site coordination across worker processes: single-flight leases for the poll (one
    tick per poll interval, one scheduler status query per status interval), the circuit
    breaker, and the row submissions lock while they check the queue limit."""

    __tablename__ = "site_monitors"

    site: Mapped[str] = mapped_column(String(128), primary_key=True)
    tick_until: Mapped[datetime] = mapped_column(default=utcnow)
    status_until: Mapped[datetime] = mapped_column(default=utcnow)
    # The circuit breaker: submission failures in a row, and until when the site rests.
    submit_failures: Mapped[int] = mapped_column(Integer, default=0)
    breaker_until: Mapped[datetime | None] = mapped_column(nullable=True)
    # The reconciler's sweep of this site's records (tasks/reconcile.py): one at a time.
    sweep_until: Mapped[datetime | None] = mapped_column(nullable=True)
    # What an operator asks of a site (``edgecelery site show``): which worker last ticked
    # here and when (written by every worker's clock, so it works with the broker away), the
    # last scheduler status query (when, how long, its error), the last error of any step.
    worker_seen_at: Mapped[datetime | None] = mapped_column(nullable=True)
    worker_seen_by: Mapped[str | None] = mapped_column(String(256), nullable=True)
    status_query_at: Mapped[datetime | None] = mapped_column(nullable=True)
    status_query_seconds: Mapped[float | None] = mapped_column(nullable=True)
    status_query_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_error_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The idle-node windows the site's scheduler last reported (a pilot site asks when a pilot
    # is due: backends/backfill_probe.py), as [nodes, seconds or null, where], and when: what
    # the choice among candidate sites reads of a site's idle nodes (site_handoff.py).
    backfill_windows: Mapped[list | None] = mapped_column(JSON, nullable=True)
    backfill_at: Mapped[datetime | None] = mapped_column(nullable=True)


class ServiceInfo(Base):
    """Facts about this deployment kept with its records (its instance tag)."""

    __tablename__ = "service_info"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class MailRecord(Base):
    """One status event to be mailed to its Argo job's ``email`` list. Keyed by the event, so
    a status message delivered twice makes one record and one mail; ``sent_at`` marks it done,
    ``claimed_at`` the sender that holds it meanwhile."""

    __tablename__ = "mail_records"

    event_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True
    )
    argo_job_id: Mapped[int] = mapped_column(Integer, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(nullable=True)


class DeadLetter(Base):
    """A message from outside that the service refused (undecodable, too large, too deep, a
    bad ``message_id``, an invalid job, or one that could not be stored), set aside for an
    operator (``edgecelery intake dead-letters``) instead of blocking its queue.

    The intake's ``REJECTED`` answer is stored with it and published after the commit; one
    whose publish failed is sent again by the status sweep, as status messages are.
    """

    __tablename__ = "dead_letters"
    __table_args__ = (
        Index(
            "ix_dead_letters_unanswered",
            "id",
            sqlite_where=text("answer_sent = 0"),
            postgresql_where=text("answer_sent = false"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Which consumer refused it: "intake" or "mail".
    source: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The producer's message id when it was a usable one (else the reason says what it was).
    message_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    content_type: Mapped[str] = mapped_column(String(256), default="")
    # The body as received, cut to ``message_max_bytes``; ``body_size`` is its whole length.
    body: Mapped[bytes] = mapped_column(LargeBinary)
    body_size: Mapped[int] = mapped_column(BigInteger)
    # Every problem found, as [{"field": ..., "problem": ...}].
    errors: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    # The REJECTED status message that answers it (intake only), and where it goes.
    answer_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    answer: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    answer_sent: Mapped[bool] = mapped_column(default=False, info=INTERNAL)


class SourceCursor(Base):
    """How far a job source has read (workflows/sources/sql.py): the key of the last row
    taken. Only a shortcut: a row read again finds the job its first reading made (the job's
    intake key names the source and the row), so the cursor may lag after a crash."""

    __tablename__ = "source_cursors"

    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    last_key: Mapped[int | str] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebSession(Base):
    """A login to the job browser. The cookie carries a random token; only its SHA-256 is kept
    here, so reading this table gives no one a session. Deleting the row ends the session
    (logout, "log out everywhere", a password change); ``password_stamp`` ties it to the
    password hash it was opened with, so a hash changed in the settings ends it too."""

    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(256), index=True)
    password_stamp: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


# A subjob as the site steps read it: a record, or a row of every column of ``subjobs``
# (``state_store.load_subjob``), read by attribute alike.
SubjobView = SubJob | Row
