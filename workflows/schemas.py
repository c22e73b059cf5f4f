"""The job messages of the HUST'17 paper: the Balsam job (2.1.1) and the Argo job (2.2.1).

Field names are the paper's, so a message written for the original service is accepted as it
is. Everything a message carries is data: names are restricted to safe characters because
they become queue names and file names, URLs must have a scheme, and no field may hold control
characters. Unknown fields are refused, so a misspelt key is reported instead of ignored.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$"
URL_PATTERN = r"^[A-Za-z][A-Za-z0-9+.-]*://[^\s\x00-\x1f\x7f]*$"
ROUTING_KEY_PATTERN = r"^[A-Za-z0-9_.:-]{1,255}$"
TEXT_PATTERN = r"^[^\x00-\x08\x0b-\x1f\x7f]*$"  # no control characters but tab and newline
LINE_PATTERN = r"^[^\x00-\x1f\x7f]*$"  # no control characters at all
EMAIL_PATTERN = r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$"

SafeName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Url = Annotated[str, StringConstraints(pattern=URL_PATTERN, max_length=4096)]
Line = Annotated[str, StringConstraints(pattern=LINE_PATTERN, max_length=1024)]
# Names and identifiers kept in 256-character columns (models.py): a longer one is refused here
# with the other field errors, not by the database (PostgreSQL enforces the width).
Label = Annotated[str, StringConstraints(pattern=LINE_PATTERN, max_length=256)]
Text = Annotated[str, StringConstraints(pattern=TEXT_PATTERN, max_length=65536)]
Count = Annotated[StrictInt, Field(ge=1, le=10_000_000)]
MAX_CANDIDATE_SITES = 16


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class BalsamJobMessage(_Message):
    """One subjob: an application run at one site through its batch scheduler."""

    name: Label = Field(min_length=1)
    description: Text = ""
    # ``site`` or ``sites``, never both (``validation.site_fields``): ``sites`` names candidate
    # sites, one of which is chosen when the subjob is handed over (edgeceleryapp/site_choice.py);
    # until then ``site`` holds the first of them.
    site: SafeName | None = None
    sites: list[SafeName] | None = Field(None, min_length=1, max_length=MAX_CANDIDATE_SITES)
    argo_job_id: Annotated[StrictInt, Field(ge=0, le=2**63 - 1)] | None = None
    queue: SafeName | None = None
    project: SafeName | None = None
    wall_time_minutes: Annotated[StrictInt, Field(ge=1, le=525_600)] | None = None
    num_nodes: Count = 1
    processes_per_node: Annotated[StrictInt, Field(ge=1, le=100_000)] = 1
    scheduler_config: Line | None = None
    application: SafeName
    config_file: Line | None = None
    input_url: Url | None = None
    output_url: Url | None = None
    # The names of the subjobs of the same Argo job this one waits for (a graph job:
    # edgeceleryapp/graph.py checks them); none for the linear SUBJOB_* loop.
    parents: list[Label] | None = Field(None, max_length=100_000)

    @model_validator(mode="after")
    def _first_candidate(self) -> BalsamJobMessage:
        """A subjob naming candidates is stored at the first of them until one is chosen."""
        if self.site is None and self.sites:
            self.site = self.sites[0]
        return self

    @field_validator("config_file", "scheduler_config")
    @classmethod
    def _relative_path(cls, value: str | None) -> str | None:
        """A file in the job's work directory: relative, and never above it."""
        if value is None:
            return None
        if value.startswith("/") or value.startswith("~"):
            raise ValueError("must be a path relative to the job's work directory")
        if ".." in value.split("/"):
            raise ValueError("must not contain '..'")
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class ArgoJobMessage(_Message):
    """An ordered chain of Balsam jobs across sites."""

    user_id: Label = ""
    name: Label = Field(min_length=1)
    description: Text = ""
    group_identifier: Label = ""
    username: Label = ""
    email: Line = ""
    input_url: Url | None = None
    output_url: Url | None = None
    job_status_routing_key: (
        Annotated[str, StringConstraints(pattern=ROUTING_KEY_PATTERN)] | None
    ) = None
    # At most argo.max_subjobs (checked with the graph: workflows/intake.py); this bound only
    # keeps a huge message from being parsed whole.
    subjobs: list[BalsamJobMessage] = Field(min_length=1, max_length=100_000)

    @field_validator("email")
    @classmethod
    def _emails(cls, value: str) -> str:
        """A comma separated list of addresses (2.2.1)."""
        for address in filter(None, (a.strip() for a in value.split(","))):
            if not re.match(EMAIL_PATTERN, address):
                raise ValueError(f"{address!r} is not an e-mail address")
        return value

    def email_list(self) -> list[str]:
        return [a.strip() for a in self.email.split(",") if a.strip()]
