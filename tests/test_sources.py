"""Job sources without servers: the template, the settings, the registry, and the sql and
directory sources taking items through the intake path into a SQLite database (the broker is
kombu's memory transport). The argo worker running them is in
tests/integration/test_sources.py."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from edgeceleryapp import dead_letters
from edgeceleryapp.db import read_scope
from edgeceleryapp.errors import ConfigurationError, ValidationFailed
from edgeceleryapp.models import ArgoJob, SourceCursor
from edgeceleryapp.settings import (
    DirectorySourceSettings,
    Settings,
    SQLSourceSettings,
    load_settings,
)
from workflows.inbound import message_id_problem
from workflows.sources import directory, template
from workflows.sources.base import source_key
from workflows.sources.directory import DirectorySource
from workflows.sources.registry import SOURCES, source_class
from workflows.sources.runner import RETRY_MAX, pause
from workflows.sources.sql import SQLSource, offers_for

TEMPLATE = json.dumps(
    {
        "name": "shot-{shot}",
        "group_identifier": "{machine}",
        "subjobs": [
            {"name": "efit", "site": "alpha", "application": "echo", "num_nodes": "{nodes}"}
        ],
    }
)


# --- the template -------------------------------------------------------------------------


def test_a_whole_placeholder_keeps_the_value_s_type_and_a_partial_one_its_text() -> None:
    parsed = template.parse(TEMPLATE)
    assert parsed.columns == {"shot", "machine", "nodes"}
    message = template.render(parsed, {"shot": 171234, "machine": "d3d", "nodes": 2})
    assert message["name"] == "shot-171234"
    assert message["group_identifier"] == "d3d"
    assert message["subjobs"][0]["num_nodes"] == 2


def test_row_values_never_become_structure() -> None:
    """A value full of quotes and braces stays one string: it is put into the parsed
    document, never into text parsed again."""
    parsed = template.parse('{"name": "x-{v}", "description": "{v}"}')
    hostile = '", "subjobs": [{"site": "evil"}], "x": "{other}'
    message = template.render(parsed, {"v": hostile})
    assert set(message) == {"name", "description"}
    assert message["description"] == hostile
    assert message["name"] == "x-" + hostile


def test_doubled_braces_are_braces() -> None:
    parsed = template.parse('{"name": "{{literal}} {a}"}')
    assert parsed.columns == {"a"}
    assert template.render(parsed, {"a": None})["name"] == "{literal} null"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"name": "{a"}', "template name: a lone '{'"),
        ('{"name": "{a.b}"}', "template name: a lone '{'"),
        ("[1]", "must be a JSON object"),
        ("{nope", "not JSON"),
    ],
)
def test_a_bad_template_is_refused_saying_where(text: str, problem: str) -> None:
    with pytest.raises(template.TemplateError, match=problem):
        template.parse(text)


def test_a_row_without_a_column_or_with_an_unusable_value_is_refused_naming_it() -> None:
    parsed = template.parse(TEMPLATE)
    with pytest.raises(ValidationFailed) as caught:
        template.render(parsed, {"shot": 1, "nodes": b"\x00"})
    assert ("template {machine}", "no column 'machine' in the row") in caught.value.errors
    assert ("column nodes", "a bytes cannot be put in a job message") in caught.value.errors


def test_database_values_become_json() -> None:
    assert template.json_value(Decimal("3")) == 3
    assert template.json_value(Decimal("2.5")) == 2.5
    assert template.json_value(datetime(2017, 11, 12, 8, 30)) == "2017-11-12T08:30:00"


# --- settings and registry -----------------------------------------------------------------


def sql_settings(path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "name": "shots",
        "kind": "sql",
        "url": f"sqlite:///{path}",
        "query": "SELECT shot, machine, nodes FROM shots WHERE shot > :after "
        "ORDER BY shot LIMIT :limit",
        "key": "shot",
        "template": TEMPLATE,
        **extra,
    }


def test_sources_load_from_the_settings_file(tmp_path: Path) -> None:
    config = tmp_path / "edgecelery.toml"
    config.write_text(
        "[[sources]]\n"
        'name = "shots"\nkind = "sql"\nurl = "sqlite:////srv/shots.db"\nkey = "shot"\n'
        'query = "SELECT * FROM shots WHERE shot > :after ORDER BY shot LIMIT :limit"\n'
        "template = '''{\"name\": \"shot-{shot}\", \"subjobs\": []}'''\n"
        "[[sources]]\n"
        'name = "drop"\nkind = "directory"\npath = "/srv/drop"\npoll_interval = 1\n'
    )
    settings = load_settings(config, {})
    assert [(s.name, s.kind) for s in settings.sources] == [("shots", "sql"), ("drop", "directory")]
    assert settings.sources[0].poll_interval == 0.2  # small by default: latency


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ({"name": "x", "kind": "ftp"}, "does not match any of the expected tags"),
        ({"name": "Bad Name", "kind": "directory", "path": "/d"}, "name"),
        ({"name": "intake", "kind": "directory", "path": "/d"}, "queue consumer"),
        ({"name": "d", "kind": "directory", "path": "rel"}, "path: Value error, must be an abs"),
        ({"name": "d", "kind": "directory", "path": "/d", "extra": 1}, "extra"),
    ],
)
def test_a_bad_source_is_refused_naming_the_key(tmp_path: Path, source: dict, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem) as caught:
        _load({"sources": [source]}, tmp_path)
    assert "settings: sources.0" in str(caught.value)


def _load(data: dict, folder: Path) -> Settings:
    """The settings of a file holding ``data``'s ``[[sources]]``, as a worker loads them."""
    lines = []
    for source in data["sources"]:
        lines += ["[[sources]]", *(f"{k} = {json.dumps(v)}" for k, v in source.items())]
    config = folder / "edgecelery.toml"
    config.write_text("\n".join(lines) + "\n")
    return load_settings(config, {})


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"query": "SELECT * FROM shots WHERE shot > 5"}, "bound parameter :after"),
        ({"query": "SELECT * FROM shots WHERE shot > :after"}, "bound parameter :limit"),
        ({"url": "not a url"}, "not a SQLAlchemy URL"),
        ({"template": '{"name": "{"}'}, "a lone"),
        ({"key": "shot; drop"}, "key"),
    ],
)
def test_a_bad_sql_source_is_refused_naming_the_key(
    tmp_path: Path, extra: dict, problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        _load({"sources": [sql_settings(tmp_path / "s.db", **extra)]}, tmp_path)


def test_two_sources_may_not_share_a_name(tmp_path: Path) -> None:
    one = {"name": "shots", "kind": "directory", "path": "/d"}
    with pytest.raises(ConfigurationError, match=r"sources\[1\]\.name: 'shots' names two"):
        _load({"sources": [sql_settings(tmp_path / "s.db"), one]}, tmp_path)


def test_every_kind_the_settings_accept_has_a_plugin() -> None:
    kinds = {SQLSourceSettings.model_fields["kind"].annotation.__args__[0]}  # type: ignore[union-attr]
    kinds |= {DirectorySourceSettings.model_fields["kind"].annotation.__args__[0]}  # type: ignore[union-attr]
    assert set(SOURCES) == kinds
    assert source_class("sql") is SQLSource
    assert source_class("directory") is DirectorySource
    with pytest.raises(ConfigurationError, match=r"unknown sources\.kind 'ftp'"):
        source_class("ftp")


def test_intake_messages_may_not_take_a_source_s_key() -> None:
    assert "reserved for job sources" in (message_id_problem(source_key("shots", "1")) or "")
    assert message_id_problem("shot-1") is None


def test_the_runner_looks_again_at_once_after_a_full_batch_and_backs_off_after_failures(
    tmp_path: Path,
) -> None:
    source = SQLSource(SQLSourceSettings(**sql_settings(tmp_path / "s.db", batch=10)))
    assert pause(source, 10, 0) == 0.0
    assert pause(source, 3, 0) == 0.2
    assert pause(source, 0, 2) == pytest.approx(0.8)
    assert pause(source, 0, 20) == RETRY_MAX


# --- the sql source ---------------------------------------------------------------------------


def shots_db(path: Path, rows: list[tuple[Any, ...]]) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS shots (shot INTEGER PRIMARY KEY, machine TEXT, nodes)"
        )
        conn.executemany("INSERT INTO shots VALUES (?, ?, ?)", rows)


def jobs() -> list[tuple[str, str]]:
    with read_scope() as s:
        return [(a.name, a.intake_key or "") for a in s.scalars(select(ArgoJob).order_by("id"))]


def sql_source(path: Path, **extra: Any) -> SQLSource:
    source = SQLSource(SQLSourceSettings(**sql_settings(path, **extra)))
    source.start()
    return source


def test_offers_name_their_row_and_refuse_a_row_the_template_cannot_fill() -> None:
    parsed = template.parse(TEMPLATE)
    rows = [{"shot": 7, "machine": "d3d", "nodes": 1}, {"shot": 8, "nodes": 1}]
    good, bad = offers_for("shots", parsed, "shot", rows)
    assert good.key == "source:shots:7" and good.data["name"] == "shot-7" and good.errors is None
    assert bad.key == "source:shots:8" and bad.errors == [
        ("template {machine}", "no column 'machine' in the row")
    ]
    with pytest.raises(ConfigurationError, match="no column 'id'"):
        offers_for("shots", parsed, "id", rows)


def test_each_new_row_makes_one_job_and_the_cursor_follows(env) -> None:
    db = env.root / "shots.db"
    shots_db(db, [(1, "d3d", 1), (2, "d3d", 2)])
    source = sql_source(db)
    assert source.poll() == 2
    assert source.poll() == 0
    shots_db(db, [(3, "d3d", 1)])
    assert source.poll() == 1
    assert jobs() == [
        ("shot-1", "source:shots:1"),
        ("shot-2", "source:shots:2"),
        ("shot-3", "source:shots:3"),
    ]
    with read_scope() as s:
        assert s.scalar(select(SourceCursor.last_key)) == 3


def test_a_row_read_again_after_a_crash_makes_no_second_job(env, monkeypatch) -> None:
    """The jobs are stored, then the process dies before the cursor moves: the next run
    reads the same rows and finds their jobs."""
    db = env.root / "shots.db"
    shots_db(db, [(1, "d3d", 1), (2, "d3d", 1)])
    source = sql_source(db)

    def crash(_last: Any) -> None:
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(source, "save_cursor", crash)
    with pytest.raises(KeyboardInterrupt):
        source.poll()
    restarted = sql_source(db)
    assert restarted.after == 0  # the cursor never moved
    assert restarted.poll() == 2
    assert [key for _, key in jobs()] == ["source:shots:1", "source:shots:2"]


def test_a_restarted_source_starts_after_the_last_row_taken(env) -> None:
    db = env.root / "shots.db"
    shots_db(db, [(5, "d3d", 1)])
    sql_source(db, start_after=3).poll()
    assert sql_source(db).after == 5


def test_a_full_batch_is_taken_in_key_order(env) -> None:
    db = env.root / "shots.db"
    shots_db(db, [(i, "d3d", 1) for i in range(1, 6)])
    source = sql_source(db, batch=2)
    assert [source.poll(), source.poll(), source.poll(), source.poll()] == [2, 2, 1, 0]
    assert [name for name, _ in jobs()] == [f"shot-{i}" for i in range(1, 6)]


def test_a_bad_row_is_set_aside_once_and_the_rows_after_it_go_on(env) -> None:
    db = env.root / "shots.db"
    shots_db(db, [(1, "d3d", 1), (2, "d3d", "many"), (3, "d3d", 1)])
    source = sql_source(db)
    source.poll()
    assert [name for name, _ in jobs()] == ["shot-1", "shot-3"]
    letters = dead_letters.listing("shots")
    assert len(letters) == 1
    assert letters[0]["message_id"] == "source:shots:2"
    assert "subjobs[0].num_nodes" in letters[0]["reason"]
    sql_source(db, start_after=0).poll()  # read again from the start: nothing new
    assert len(jobs()) == 2 and len(dead_letters.listing("shots")) == 1
    assert json.loads(dead_letters.get(letters[0]["id"])["body"])["nodes"] == "many"


def test_a_row_naming_an_unknown_site_is_refused_like_an_intake_message(env) -> None:
    db = env.root / "shots.db"
    shots_db(db, [(1, "d3d", 1)])
    bad = TEMPLATE.replace('"alpha"', '"nowhere"')
    sql_source(db, template=bad).poll()
    (letter,) = dead_letters.listing("shots")
    assert "subjobs[0].site: no site named 'nowhere'" in letter["reason"]


# --- the directory source ----------------------------------------------------------------------


def folder_source(env, **extra: Any) -> DirectorySource:
    path = env.root / "drop"
    source = DirectorySource(
        DirectorySourceSettings(name="drop", kind="directory", path=path, **extra)
    )
    source.start()
    return source


def drop(folder: Path, name: str, body: Any) -> Path:
    """A job file written the documented way: under a hidden name, then renamed."""
    part = folder / f".{name}.part"
    part.write_text(body if isinstance(body, str) else json.dumps(body))
    os.rename(part, folder / name)
    return folder / name


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def argo_job(name: str) -> dict:
    return {"name": name, "subjobs": [{"name": "a", "site": "alpha", "application": "echo"}]}


def test_a_dropped_file_becomes_a_job_and_moves_to_taken(env) -> None:
    source = folder_source(env)
    drop(source.folder, "one.json", argo_job("one"))
    assert source.poll() == 1
    ((name, key),) = jobs()
    assert name == "one"
    (taken,) = names(source.folder / "taken")
    assert taken.endswith("-one.json") and key == f"source:drop:{taken}"
    assert names(source.folder) == [".claimed", "refused", "taken"]
    assert source.poll() == 0


def test_the_same_file_name_dropped_twice_makes_two_jobs(env) -> None:
    source = folder_source(env)
    drop(source.folder, "shot.json", argo_job("first"))
    source.poll()
    drop(source.folder, "shot.json", argo_job("second"))
    source.poll()
    assert [name for name, _ in jobs()] == ["first", "second"]
    assert len(names(source.folder / "taken")) == 2


def test_partial_and_other_files_are_left_alone(env) -> None:
    source = folder_source(env)
    (source.folder / ".half.json").write_text("{")
    (source.folder / "notes.txt").write_text("hello")
    (source.folder / "x.json.part").write_text("{")
    assert source.poll() == 0
    assert names(source.folder)[:1] == [".claimed"]
    assert {".half.json", "notes.txt", "x.json.part"} <= set(names(source.folder))


def test_a_file_claimed_before_a_crash_is_taken_once(env, monkeypatch) -> None:
    """Claimed, stored, then killed before it moved to taken/: the next look finds it in
    .claimed/ and finds its job."""
    source = folder_source(env)
    drop(source.folder, "one.json", argo_job("one"))

    def crash(*_: Any) -> None:
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(source, "_set_down", crash)
    with pytest.raises(KeyboardInterrupt):
        source.poll()
    assert len(names(source.folder / ".claimed")) == 1
    monkeypatch.undo()
    assert folder_source(env).poll() == 1
    assert len(jobs()) == 1
    assert len(names(source.folder / "taken")) == 1
    assert names(source.folder / ".claimed") == []


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("{not json", "message: not valid JSON"),
        ({"name": "x", "subjobs": [{"name": "a", "site": "nowhere", "application": "echo"}]},
         "subjobs[0].site: no site named 'nowhere'"),
        ({"name": "x"}, "subjobs: "),
    ],
)  # fmt: skip
def test_a_bad_file_is_refused_with_a_why_naming_the_field(env, body: Any, why: str) -> None:
    source = folder_source(env)
    drop(source.folder, "bad.json", body)
    source.poll()
    assert jobs() == []
    refused = names(source.folder / "refused")
    assert len(refused) == 2 and refused[1] == refused[0] + ".why"
    assert why in (source.folder / "refused" / refused[1]).read_text()
    (letter,) = dead_letters.listing("drop")
    assert letter["message_id"] == f"source:drop:{refused[0]}" and why in letter["reason"]


def test_a_symbolic_link_is_refused_not_followed(env) -> None:
    source = folder_source(env)
    target = env.root / "elsewhere.json"
    target.write_text(json.dumps(argo_job("secret")))
    (source.folder / "link.json").symlink_to(target)
    source.poll()
    assert jobs() == []
    refused = names(source.folder / "refused")
    assert "symbolic link" in (source.folder / "refused" / refused[1]).read_text()
    assert target.read_text()  # the target is untouched, where it was


def test_a_folder_or_an_oversized_file_is_refused(env) -> None:
    source = folder_source(env)
    (source.folder / "dir.json").mkdir()
    drop(source.folder, "big.json", {"name": "x" * 300_000})
    source.poll()
    whys = sorted(
        p.read_text() for p in (source.folder / "refused").iterdir() if p.suffix == ".why"
    )
    assert any("more than message_max_bytes" in w for w in whys)
    assert any("is not a regular file" in w for w in whys)


def test_claimed_names_are_unique_and_keep_the_end_of_long_names() -> None:
    now = datetime(2017, 11, 12, 8, 30)
    long = "x" * 300 + ".json"
    name = directory.claimed_name(long, now, "abcdef")
    assert name.startswith("20171112T083000.000000-abcdef-") and name.endswith(".json")
    assert len(name) < 200
    assert directory.wanted("a.json") and not directory.wanted(".a.json")
    assert not directory.wanted("a.json.part")


def test_a_batch_that_cannot_be_stored_now_leaves_files_claimed(env, monkeypatch) -> None:
    from edgeceleryapp.errors import TransientError
    from workflows.sources import base

    def away(_items: list) -> list:
        raise TransientError("database away")

    source = folder_source(env)
    drop(source.folder, "one.json", argo_job("one"))
    monkeypatch.setattr(base, "submit_argo_batch", away)
    with pytest.raises(TransientError):
        source.poll()
    assert len(names(source.folder / ".claimed")) == 1
    monkeypatch.undo()
    assert source.poll() == 1 and len(jobs()) == 1


def test_the_example_settings_document_both_kinds() -> None:
    example = Path(__file__).resolve().parents[1] / "edgecelery.example.toml"
    sources = load_settings(example, {}).sources
    assert [s.kind for s in sources] == ["sql", "directory"]
    rendered = template.render(template.parse(sources[0].template), {"shot": 7, "machine": "d3d"})
    assert rendered["name"] == "efit-7"


def test_the_runner_goes_on_after_a_failed_look_and_stops_when_told(tmp_path: Path) -> None:
    import threading

    from workflows.sources.runner import SourceRunner

    looks: list[str] = []
    done = threading.Event()

    class Flaky(DirectorySource):
        def poll(self) -> int:
            looks.append("look")
            if len(looks) == 1:
                raise OSError("the folder's file system is away")
            if len(looks) == 3:
                done.set()
            return 0

    source = Flaky(DirectorySourceSettings(name="f", kind="directory", path=tmp_path / "f"))
    runner = SourceRunner([source], lambda _s, _found, _failures: 0.01)
    runner.start()
    assert done.wait(10), "the runner stopped looking after a failure"
    runner.stop()
    assert not runner.threads[0].is_alive()
    assert (tmp_path / "f" / "taken").is_dir()  # started once, on its thread
