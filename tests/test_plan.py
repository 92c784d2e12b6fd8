"""`hookctl plan` (issue 17): a rule change replayed over the stored events, compared with the record.

Real CLI runs against a real SQLite file that `fire` filled by sending to a real local server;
state is read through the CLI (`log --json`) and the store's public methods.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from hookctl.store import open_store
from hookctl.store.event_records import NewEvent
from hookctl.store.ids import new_event_id
from hookctl.store.sqlite.events import MAX_STORED_EVENT_BYTES
from tests.conftest import ndjson

SECRET = "s3cr3t-token-value"

URGENT = """\
name: urgent
on: [ticket.created]
when:
  all:
    - {{field: ticket.urgency, op: {op}, value: {value}}}
webhook:
  method: POST
  url: "{base}/urgent"
  headers: {{X-Token: "{{{{ env.PLAN_SECRET }}}}"}}
  body: {{ticket: "{{{{ ticket.id }}}}", urgency: "{{{{ ticket.urgency }}}}"}}
retry: none
"""
ALL = """\
name: {name}
on: [ticket.created]
webhook:
  method: POST
  url: "{base}/all"
  body: {body}
retry: none
"""
LEGACY = """\
name: legacy
on: [ticket.updated]
webhook: {{method: POST, url: "{base}/legacy"}}
retry: none
"""
LOW = """\
name: low
on: [ticket.created]
when: {{all: [{{field: ticket.urgency, op: eq, value: Low}}]}}
webhook: {{method: POST, url: "{base}/low"}}
retry: none
"""
URGENCIES = ["High", "Urgent", "Low", "Urgent", "High", "Low"]


def write_rules(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.yaml"):
        old.unlink()
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return directory


def v1(base: str) -> dict[str, str]:
    return {
        "urgent.yaml": URGENT.format(base=base, op="in", value="[High, Urgent]"),
        "all.yaml": ALL.format(base=base, name="all-created", body='{id: "{{ ticket.id }}"}'),
        "legacy.yaml": LEGACY.format(base=base),
    }


def v2(base: str) -> dict[str, str]:
    """Tightened to `eq Urgent`; all-created renamed with a body change; legacy gone; low new."""
    return {
        "urgent.yaml": URGENT.format(base=base, op="eq", value="Urgent"),
        "all.yaml": ALL.format(base=base, name="created-all", body='{id: "{{ ticket.id }}", v: 2}'),
        "low.yaml": LOW.format(base=base),
    }


def events_text() -> str:
    events: list[dict[str, Any]] = [
        {"event": "ticket.created", "id": f"c{n}", "ticket": {"id": n, "urgency": u}}
        for n, u in enumerate(URGENCIES, 1)
    ]
    events += [{"event": "ticket.updated", "id": f"u{n}", "ticket": {"id": n}} for n in (7, 8)]
    events.append({"event": "ticket.deleted", "id": "d9", "ticket": {"id": 9}})
    return "".join(json.dumps(e) + "\n" for e in events)


@pytest.fixture
def fired(cli, tmp_path: Path, httpserver: HTTPServer, monkeypatch) -> dict[str, Any]:
    """The v1 rules fired over nine events (one matched by nothing), all sent and recorded."""
    for path in ("/urgent", "/all", "/legacy", "/low"):
        httpserver.expect_request(path).respond_with_data("ok")
    base = httpserver.url_for("").rstrip("/")
    rules = write_rules(tmp_path / "rules", v1(base))
    events = tmp_path / "events.ndjson"
    events.write_text(events_text(), encoding="utf-8")
    monkeypatch.setenv("PLAN_SECRET", SECRET)
    result = cli("fire", "-r", rules, events)
    assert result.exit_code == 0, result.stderr
    monkeypatch.delenv("PLAN_SECRET")  # the plan never needs it
    log = ndjson(cli("log", "--json", "-n", "0").stdout)
    assert len(log) == 4 + 6 + 2
    httpserver.clear_log()
    return {"base": base, "rules": rules, "events": events, "log": log}


def plan(cli, *args: Any, env: dict[str, str] | None = None) -> tuple[int, list[dict], str]:
    result = cli("plan", "--json", *args, env=env)
    return result.exit_code, ndjson(result.stdout), result.stderr


def by_rule(records: list[dict]) -> dict[str, dict]:
    return {r["rule"]: r for r in records if r["record"] == "rule"}


def counts(record: dict) -> tuple[int, int, int, int]:
    return (record["added"], record["removed"], record["changed"], record["unchanged"])


def test_an_unchanged_rule_set_has_no_difference(cli, fired, httpserver: HTTPServer):
    code, records, stderr = plan(cli, "-r", fired["rules"])
    assert code == 0, stderr
    rules = by_rule(records)
    assert {n: counts(r) for n, r in rules.items()} == {
        "urgent": (0, 0, 0, 4),
        "all-created": (0, 0, 0, 6),
        "legacy": (0, 0, 0, 2),
    }
    assert {r["status"] for r in rules.values()} == {"kept"}
    summary = records[-1]
    assert summary["record"] == "summary" and summary["events"] == 9
    assert (summary["differs"], summary["unchanged"]) == (False, 12)
    assert httpserver.log == []  # nothing sent


def test_a_changed_rule_set_is_counted_per_rule_with_diffs(
    cli, fired, tmp_path: Path, httpserver: HTTPServer
):
    new = write_rules(tmp_path / "new", v2(fired["base"]))
    code, records, stderr = plan(cli, "-r", new)
    assert code == 2, stderr
    rules = by_rule(records)
    assert {n: (r["status"], counts(r)) for n, r in rules.items()} == {
        "urgent": ("kept", (0, 2, 0, 2)),  # High tickets 1 and 5 no longer; Urgent 2 and 4 same
        "created-all": ("renamed", (0, 0, 6, 0)),  # same method and URL: a rename, body changed
        "low": ("new", (2, 0, 0, 0)),
        "legacy": ("deleted", (0, 2, 0, 0)),
    }
    assert rules["created-all"]["renamed_from"] == "all-created"
    examples = [r for r in records if r["record"] == "example"]
    by_kind: dict[tuple[str, str], list[dict]] = {}
    for e in examples:
        by_kind.setdefault((e["rule"], e["kind"]), []).append(e)
    assert [e["ticket"] for e in by_kind[("urgent", "removed")]] == ["1", "5"]
    assert [e["event_id"] for e in by_kind[("low", "added")]] == ["c3", "c6"]
    changed = by_kind[("created-all", "changed")]
    assert len(changed) == 3  # three examples of each kind by default
    log = {d["id"]: d for d in fired["log"]}
    for e in changed:
        assert log[e["delivery_id"]]["rule"] == "all-created"
        assert log[e["delivery_id"]]["ticket"] == e["ticket"]
        assert e["event"].startswith("evt_")
        assert e["diff"].splitlines() == [
            "--- all-created (on record)",
            "+++ created-all (new rules)",
            "@@ -3,4 +3,5 @@",
            " ",
            " {",
            f'-  "id": {e["ticket"]}',  # a lone {{ ticket.id }} keeps its JSON type
            f'+  "id": {e["ticket"]},',
            '+  "v": 2',
            " }",
        ]
    summary = records[-1]
    assert (summary["added"], summary["removed"], summary["changed"], summary["unchanged"]) == (
        2,
        4,
        6,
        2,
    )
    assert summary["differs"] is True
    assert httpserver.log == []


def test_a_secret_is_never_needed_nor_printed(cli, fired, tmp_path: Path):
    # The urgent rule's header reads env.PLAN_SECRET: compared as ${PLAN_SECRET}, with the
    # variable unset (the fixture removed it) or set to something else.
    changed = URGENT.format(base=fired["base"], op="in", value="[High, Urgent]").replace(
        "/urgent", "/urgent2"
    )
    new = write_rules(tmp_path / "new", {**v1(fired["base"]), "urgent.yaml": changed})
    for env in ({}, {"PLAN_SECRET": SECRET}, {"PLAN_SECRET": "another"}):
        result = cli("plan", "-r", new, env=env)
        assert result.exit_code == 2, result.stderr
        assert SECRET not in result.stdout + result.stderr
        assert "+X-Token: ${PLAN_SECRET}" not in result.stdout  # the header did not change
        assert f"-POST {fired['base']}/urgent" in result.stdout
        assert f"+POST {fired['base']}/urgent2" in result.stdout
        records = ndjson(cli("plan", "--json", "-r", new, env=env).stdout)
        assert counts(by_rule(records)["urgent"]) == (0, 0, 4, 0)
        assert SECRET not in json.dumps(records)


def test_only_one_rule(cli, fired, tmp_path: Path):
    new = write_rules(tmp_path / "new", v2(fired["base"]))
    code, records, _ = plan(cli, "-r", new, "--rule", "urgent")
    assert code == 2
    assert list(by_rule(records)) == ["urgent"]
    assert (records[-1]["removed"], records[-1]["unchanged"]) == (2, 2)
    # By its old name too, and a name from nowhere is an error (exit 1, not 2).
    assert list(by_rule(plan(cli, "-r", new, "--rule", "all-created")[1])) == ["created-all"]
    code, records, stderr = plan(cli, "-r", new, "--rule", "urgnet")
    assert code == 1 and "did you mean 'urgent'?" in stderr and records == []


def test_against_another_rule_set(cli, fired, tmp_path: Path):
    new = write_rules(tmp_path / "new", v2(fired["base"]))
    code, records, stderr = plan(cli, "-r", new, "--against", fired["rules"])
    assert code == 2, stderr
    rules = by_rule(records)
    # Rule sets are both known: a rename needs the same file name and the same webhook, and
    # created-all's body changed, so it is a delete plus an add here.
    assert {n: (r["status"], counts(r)) for n, r in rules.items()} == {
        "urgent": ("kept", (0, 2, 0, 2)),
        "created-all": ("new", (6, 0, 0, 0)),
        "low": ("new", (2, 0, 0, 0)),
        "all-created": ("deleted", (0, 6, 0, 0)),
        "legacy": ("deleted", (0, 2, 0, 0)),
    }
    # With the body as it was, the same file and webhook under a new name is a rename.
    renamed = {**v1(fired["base"])}
    renamed["all.yaml"] = renamed["all.yaml"].replace("all-created", "created-all")
    newer = write_rules(tmp_path / "renamed", renamed)
    rules = by_rule(plan(cli, "-r", newer, "--against", fired["rules"])[1])
    assert (rules["created-all"]["status"], rules["created-all"]["renamed_from"]) == (
        "renamed",
        "all-created",
    )
    assert counts(rules["created-all"]) == (0, 0, 0, 6)
    assert "all-created" not in rules


def test_against_a_git_revision(cli, fired, tmp_path: Path):
    repo = fired["rules"].parent
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)

    git("init", "-q")
    git("add", "rules")
    git("commit", "-q", "-m", "v1")
    write_rules(fired["rules"], v2(fired["base"]))  # the working tree has the change
    code, records, stderr = plan(cli, "-r", fired["rules"], "--against", "HEAD")
    assert code == 2, stderr
    rules = by_rule(records)
    assert counts(rules["urgent"]) == (0, 2, 0, 2)
    assert rules["legacy"]["status"] == "deleted" and counts(rules["legacy"]) == (0, 2, 0, 0)
    assert records[-1]["against"] == "HEAD"
    code, _, stderr = plan(cli, "-r", fired["rules"], "--against", "no-such-rev")
    assert code == 1 and "--against no-such-rev" in stderr
    # A revision is never handed to git as an option.
    code, _, stderr = plan(cli, "-r", fired["rules"], "--against=--output=x")
    assert code == 1 and "is not a revision" in stderr and not (repo / "x").exists()


def test_invalid_rules_exit_3_and_errors_exit_1(cli, fired, tmp_path: Path):
    bad = write_rules(tmp_path / "bad", {"x.yaml": "name: x\nwebhook: {method: POST}\n"})
    assert plan(cli, "-r", bad)[0] == 3
    assert plan(cli, "-r", fired["rules"], "--against", bad)[0] == 3
    code, _, stderr = plan(cli, "-r", fired["rules"], "--db", tmp_path / "nowhere.db")
    assert code == 1 and "no database" in stderr
    assert plan(cli, "-r", fired["rules"], "--since", "soon")[0] == 1


def test_the_window_duplicates_and_truncated_events(cli, fired, db_file, tmp_path: Path):
    # The same events fired again are duplicates (nothing sent): counted once.
    assert cli("fire", "-r", fired["rules"], fired["events"]).exit_code == 0
    now = time.time()
    old = now - 10 * 86400
    big = {"event": "ticket.created", "id": "big", "ticket": {"id": 99, "urgency": "Low"}}
    big["pad"] = "x" * MAX_STORED_EVENT_BYTES
    low_old = {"event": "ticket.created", "id": "old", "ticket": {"id": 98, "urgency": "Low"}}
    with open_store(db_file) as store:
        store.enqueue(
            [],
            now=now,
            events=[
                NewEvent(
                    new_event_id(old), old, "old.json", 1, "old", "ticket.created", "98", low_old
                ),
                NewEvent(new_event_id(now), now, "big.json", 1, "big", "ticket.created", "99", big),
            ],
        )
    new = write_rules(tmp_path / "new", v2(fired["base"]))
    _, records, _ = plan(cli, "-r", new)
    summary = records[-1]
    assert (summary["events"], summary["duplicates"], summary["truncated"]) == (9, 9, 1)
    assert counts(by_rule(records)["low"]) == (2, 0, 0, 0)
    _, records, _ = plan(cli, "-r", new, "--since", "30d")
    assert counts(by_rule(records)["low"]) == (3, 0, 0, 0)  # the old Low ticket too
    # Human output notes both.
    text = cli("plan", "-r", new).stdout
    assert "9 duplicate copies counted once" in text
    assert "1 event stored truncated, not replayed" in text


def test_human_output_has_the_table_examples_and_a_summary(cli, fired, tmp_path: Path):
    new = write_rules(tmp_path / "new", v2(fired["base"]))
    result = cli("plan", "-r", new)
    assert result.exit_code == 2
    lines = result.stdout.splitlines()
    assert lines[0].split("\t") == ["Rule", "Status", "Added", "Removed", "Changed", "Unchanged"]
    assert "created-all\trenamed from all-created\t0\t0\t6\t0" in lines
    assert "legacy\tdeleted\t0\t2\t0\t0" in lines
    assert any(line.strip().startswith("removed  evt_") and "ticket 1" in line for line in lines)
    assert lines[-1] == (
        "plan over 9 events stored in the last 7d, against the deliveries on record: "
        "2 added, 4 removed, 6 changed, 2 unchanged: differences"
    )


def test_a_store_without_stored_events_plans_nothing(cli, rule_file, tmp_path: Path):
    open_store(tmp_path / "hookctl.db").close()
    rules = rule_file("name: a\nwebhook: {method: POST, url: 'https://example.com/a'}\n")
    code, records, _ = plan(cli, "-r", rules)
    assert code == 0
    assert by_rule(records)["a"]["status"] == "new"
    assert records[-1]["events"] == 0


def test_a_request_that_never_rendered_and_still_cannot_is_no_difference(
    cli, rule_file, event_file, db_file
):
    # Unrendered on record (nothing sent) and unrenderable now: nothing changes.
    rules = rule_file(
        "name: typo\nwebhook: {method: POST, url: 'https://example.com/{{ ticket.nope }}'}\n"
    )
    assert cli("fire", "-r", rules, event_file({"id": "e1", "ticket": {"id": 1}})).exit_code == 1
    (delivery,) = ndjson(cli("log", "--json").stdout)
    detail = ndjson(cli("log", delivery["id"], "--json").stdout)[0]
    assert detail["unrendered"] and detail["stored_event"].startswith("evt_")
    code, records, _ = plan(cli, "-r", rules)
    assert code == 0
    assert counts(by_rule(records)["typo"]) == (0, 0, 0, 1)
    # Fixed, it would now send something that was never sent: changed, with the error shown.
    fixed = rule_file(
        "name: typo\nwebhook: {method: POST, url: 'https://example.com/{{ ticket.id }}'}\n",
        name="fixed.yaml",
    )
    code, records, _ = plan(cli, "-r", fixed)
    assert code == 2
    (example,) = [r for r in records if r["record"] == "example"]
    assert example["kind"] == "changed"
    assert "# its request could not be rendered (nothing was sent)" in example["diff"]
    assert "+POST https://example.com/1" in example["diff"]
