"""`serve`'s events page over HTTP: stored events searched, one shown, fired again by an admin."""

from __future__ import annotations

import re

import pytest

from tests.receivers import Receiver, event, rule_yaml, wait_for
from tests.serving import log_json, serving
from tests.test_serve_page import ADMIN, SECRET, secret_rule

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def opened(html: str) -> list[str]:
    """The stored events a page lists, by the ref each row links to."""
    return re.findall(r'href="/events/(evt_[0-9A-Za-z]+)" class="open"', html)


def test_events_page_filters_escapes_and_links_deliveries(cli, rule_file, receiver, db_file):
    rules = rule_file(secret_rule(receiver.url))
    with serving("-r", rules, env={"CRM_TOKEN": SECRET}) as server, server.client() as http:
        hostile = event(1, subject=HOSTILE)
        hostile["ticket"]["id"] = "<img src=x onerror=alert(2)>"
        assert http.post("/events", json=[hostile, event(2, subject="ok")]).status_code == 202
        other = {"event": "ticket.closed", "id": "evt_3", "ticket": {"id": 3}}
        assert http.post("/events/crm", json=other).status_code == 202
        assert http.post(f"/events/{'x' * 5}", json=event(4, subject="s")).status_code == 202
        wait_for(lambda: len(log_json(cli, db_file, "--status", "succeeded")) == 3, what="sent")
        page = http.get("/events")
        assert (
            page.status_code == 200
            and "default-src 'none'" in page.headers["Content-Security-Policy"]
        )
        html = page.text
        assert len(opened(html)) == 4
        assert "<img src=x" not in html and "&lt;img src=x onerror=alert(2)&gt;" in html
        assert 'href="/events" id="nav-events"' in html and 'href="/" id="nav-log"' in html
        assert 'id="nav-events"' in http.get("/").text  # the log links here too
        # Newest first: the last posted is the first row.
        by_id = {e: opened(http.get("/events", params={"id": e}).text) for e in ("evt_1", "evt_4")}
        assert html.index(by_id["evt_4"][0]) < html.index(by_id["evt_1"][0])
        assert len(opened(http.get("/events", params={"source": "crm"}).text)) == 1
        assert len(opened(http.get("/events", params={"event": "ticket.closed"}).text)) == 1
        assert len(opened(http.get("/events", params={"event": "ticket.created"}).text)) == 3
        assert len(opened(http.get("/events", params={"ticket": "2"}).text)) == 1
        assert len(opened(http.get("/events", params={"id": "evt_2"}).text)) == 1
        assert len(opened(http.get("/events", params={"since": "1h"}).text)) == 4
        assert opened(http.get("/events", params={"source": HOSTILE}).text) == []
        assert HOSTILE not in http.get("/events", params={"source": HOSTILE}).text
        assert http.get("/events", params={"since": "soon"}).status_code == 400
        # The matched deliveries link to their pages, named by rule; an unmatched event: none.
        [ref] = by_id["evt_1"]
        row = http.get("/events", params={"id": "evt_1"}).text
        [delivery_id] = re.findall(
            r'href="/deliveries/(msg_[0-9A-Za-z]+)" class="delivery">crm<', row
        )
        closed = http.get("/events", params={"event": "ticket.closed"}).text
        assert "none matched" in closed
        one = http.get(f"/events/{ref}")
        assert one.status_code == 200
        assert HOSTILE not in one.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in one.text
        assert f'href="/deliveries/{delivery_id}"' in one.text
        assert "\n    &#34;subject&#34;: " in one.text  # pretty-printed, escaped
        assert 'id="fire-again"' not in one.text  # no admin set: read-only
        delivered = http.get(f"/deliveries/{delivery_id}").text
        assert f'href="/events/{ref}" id="event-link"' in delivered
        assert http.get("/events/evt_01NOSUCHEVENT000000000000").status_code == 404
        assert http.get("/events/nope").status_code == 404
        for path in ("/events", f"/events/{ref}"):
            assert SECRET not in http.get(path).text


def _fire_token(page: str) -> str:
    return re.search(
        r'action="/events/[^"]+/fire">\s*<input type="hidden" name="token" value="([0-9a-f]+)"',
        page,
    )[1]


def test_fire_again_needs_the_admin_and_its_token_and_sends_anew(cli, rule_file, receiver, db_file):
    rules = rule_file(rule_yaml(receiver.url, name="crm"))
    env = {"ADMIN_PW": ADMIN}
    with (
        serving("-r", rules, "--admin-env", "ADMIN_PW", env=env) as server,
        server.client() as http,
    ):
        assert http.post("/events", json=event(1, subject="s")).status_code == 202
        wait_for(lambda: receiver.arrived() == 1, what="the first firing's delivery")
        [ref] = opened(http.get("/events", auth=("admin", ADMIN)).text)
        anonymous = http.get(f"/events/{ref}").text
        assert 'id="fire-again"' not in anonymous and "Sign in as admin" in anonymous
        page = http.get(f"/events/{ref}", auth=("admin", ADMIN)).text
        assert 'id="fire-again"' in page
        token = _fire_token(page)
        url = f"/events/{ref}/fire"
        # A replay token of the same server is not a fire token.
        delivery_id = log_json(cli, db_file)[0]["id"]
        shown = http.get(f"/deliveries/{delivery_id}", auth=("a", ADMIN)).text
        replay_token = re.search(r'name="token" value="([0-9a-f]+)"', shown)[1]
        # Not signed in; no token; a wrong one; the replay's; from another site.
        assert http.post(url, data={"token": token}).status_code == 401
        assert http.post(url, data={}, auth=("a", ADMIN)).status_code == 403
        assert http.post(url, data={"token": "0" * 64}, auth=("a", ADMIN)).status_code == 403
        assert http.post(url, data={"token": replay_token}, auth=("a", ADMIN)).status_code == 403
        cross = http.post(
            url,
            data={"token": token},
            auth=("a", ADMIN),
            headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        )
        assert cross.status_code == 403
        assert len(log_json(cli, db_file)) == 1 and receiver.arrived() == 1  # nothing made
        done = http.post(url, data={"token": token}, auth=("a", ADMIN))
        assert done.status_code == 303 and done.headers["Location"] == f"/events/{ref}?fired=1"
        wait_for(lambda: receiver.arrived() == 2, what="the event fired again")
        assert [body_id for _, body_id in receiver.received] == ["evt_1", "evt_1"]
        webhook_ids = [webhook_id for webhook_id, _ in receiver.received]
        assert webhook_ids[0] != webhook_ids[1]  # a new delivery, not a replay of the first
        wait_for(
            lambda: [r["status"] for r in log_json(cli, db_file)] == ["succeeded"] * 2,
            what="the new delivery recorded",
        )
        after = http.get(done.headers["Location"], auth=("a", ADMIN)).text
        assert "Fired again: 1 new delivery" in after
        assert len(re.findall(r'href="/deliveries/msg_[0-9A-Za-z]+" class="open"', after)) == 2
        assert len(opened(http.get("/events", auth=("a", ADMIN)).text)) == 1  # no new event
        # An unknown event: no page shows its token, and a guessed one is refused first.
        gone = http.post(
            "/events/evt_01NOSUCHEVENT000000000000/fire", data={"token": token}, auth=("a", ADMIN)
        )
        assert gone.status_code == 403


def test_fire_again_with_no_rule_matching_says_so(cli, rule_file, receiver, db_file):
    rules = rule_file(rule_yaml(receiver.url, name="crm"))
    env = {"ADMIN_PW": ADMIN}
    with (
        serving("-r", rules, "--admin-env", "ADMIN_PW", env=env) as server,
        server.client() as http,
    ):
        closed = {"event": "ticket.closed", "id": "evt_9", "ticket": {"id": 9}}
        assert http.post("/events", json=closed).status_code == 202
        [ref] = opened(http.get("/events", auth=("a", ADMIN)).text)
        token = _fire_token(http.get(f"/events/{ref}", auth=("a", ADMIN)).text)
        done = http.post(f"/events/{ref}/fire", data={"token": token}, auth=("a", ADMIN))
        assert done.status_code == 303 and done.headers["Location"].endswith("?fired=0")
        said = http.get(done.headers["Location"], auth=("a", ADMIN)).text
        assert "no rule loaded now matches it" in said
        assert log_json(cli, db_file) == [] and receiver.arrived() == 0


def test_a_truncated_event_is_shown_cut_and_cannot_be_fired_again(
    cli, rule_file, receiver, db_file
):
    from hookctl.store.sqlite.events import MAX_STORED_EVENT_BYTES

    rules = rule_file(rule_yaml(receiver.url, name="crm"))
    env = {"ADMIN_PW": ADMIN}
    with (
        serving("-r", rules, "--admin-env", "ADMIN_PW", "--max-body", "1M", env=env) as server,
        server.client() as http,
    ):
        huge = event(1, subject="x" * (MAX_STORED_EVENT_BYTES + 10))
        assert http.post("/events", json=huge).status_code == 202
        wait_for(lambda: receiver.arrived() == 1, what="the big event's delivery")
        listed = http.get("/events", auth=("a", ADMIN)).text
        assert "(truncated)" in listed
        [ref] = opened(listed)
        page = http.get(f"/events/{ref}", auth=("a", ADMIN)).text
        assert 'id="truncated"' in page and "cannot be fired again" in page
        assert "disabled" in page  # the admin's form is there, its button cannot be pressed
        # Posted anyway, with the page's own token: refused, nothing made.
        refused = http.post(
            f"/events/{ref}/fire", data={"token": _fire_token(page)}, auth=("a", ADMIN)
        )
        assert refused.status_code == 409 and "stored-event limit" in refused.text
        assert receiver.arrived() == 1 and len(log_json(cli, db_file)) == 1


def test_fire_again_on_postgres(rule_file, receiver, pg_url):
    rules = rule_file(rule_yaml(receiver.url, name="crm"))
    env = {"ADMIN_PW": ADMIN, "HOOKCTL_DB": pg_url}
    with (
        serving("-r", rules, "--admin-env", "ADMIN_PW", env=env) as server,
        server.client(auth=("a", ADMIN)) as http,
    ):
        assert http.post("/events", json=[event(1), event(2)]).status_code == 202
        wait_for(lambda: receiver.arrived() == 2, what="the first firing's deliveries")
        [ref] = opened(http.get("/events", params={"ticket": "2", "since": "1h"}).text)
        token = _fire_token(http.get(f"/events/{ref}").text)
        done = http.post(f"/events/{ref}/fire", data={"token": token})
        assert done.status_code == 303 and done.headers["Location"].endswith("?fired=1")
        wait_for(lambda: receiver.arrived() == 3, what="the event fired again")
        assert receiver.received[2][1] == "evt_2"
        page = http.get(f"/events/{ref}").text
        assert len(re.findall(r'href="/deliveries/msg_[0-9A-Za-z]+" class="open"', page)) == 2
