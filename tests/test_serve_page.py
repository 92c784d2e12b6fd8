"""`serve`'s execution-log page over HTTP: filters, one delivery masked, replay only for an admin."""

from __future__ import annotations

import re

import pytest

from tests.receivers import Receiver, event, wait_for
from tests.serving import log_json, serving

SECRET = "crm-" + "t0ken-never-shown"
ADMIN = "adm1n-" + "pass"


def secret_rule(url: str) -> str:
    return (
        "name: crm\non: [ticket.created]\n"
        f"webhook: {{method: POST, url: {url!r}, headers: {{Authorization: 'Bearer {{{{ env.CRM_TOKEN }}}}'}}, "
        "body: {subject: '{{ ticket.subject }}'}}\n"
        "retry: none\n"
    )


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def test_log_page_filters_masks_and_escapes(cli, rule_file, receiver, db_file):
    rules = rule_file(secret_rule(receiver.url))
    env = {"CRM_TOKEN": SECRET}
    with serving("-r", rules, env=env) as server, server.client() as http:
        hostile = event(1, subject="<script>alert(1)</script>")
        hostile["ticket"]["id"] = "<img src=x onerror=alert(2)>"
        assert http.post("/events", json=[hostile, event(2, subject="ok")]).status_code == 202
        wait_for(lambda: len(log_json(cli, db_file, "--status", "succeeded")) == 2, what="2 sent")
        receiver.status = 500
        assert http.post("/events", json=event(3, subject="fails")).status_code == 202
        wait_for(lambda: len(log_json(cli, db_file, "--status", "failed")) == 1, what="1 failed")
        page = http.get("/")
        assert page.status_code == 200
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
        html = page.text
        assert "<img src=x" not in html and "&lt;img src=x onerror=alert(2)&gt;" in html
        assert html.count('class="open"') == 3
        failed = http.get("/", params={"status": "failed"}).text
        assert failed.count('class="open"') == 1 and 'class="status failed"' in failed
        by_ticket = http.get("/", params={"ticket": "2"}).text
        assert by_ticket.count('class="open"') == 1
        assert http.get("/", params={"rule": "nope"}).text.count('class="open"') == 0
        assert http.get("/", params={"since": "1h"}).text.count('class="open"') == 3
        assert http.get("/", params={"since": "soon"}).status_code == 400
        delivery_id = log_json(cli, db_file, "--status", "failed")[0]["id"]
        one = http.get(f"/deliveries/{delivery_id}").text
        assert "Bearer ${CRM_TOKEN}" in one and "answer 500" in one
        assert 'id="replay"' not in one  # no admin set: read-only
        assert (
            http.post(f"/deliveries/{delivery_id}/replay", data={"token": "x"}).status_code == 403
        )
        assert http.get("/deliveries/msg_nothing").status_code == 404
        for path in ("/", f"/deliveries/{delivery_id}", "/", "/?status=failed"):
            assert SECRET not in http.get(path).text
        assert "<script>" not in one


def test_replay_needs_the_admin_and_a_token_from_the_page(cli, rule_file, receiver, db_file):
    rules = rule_file(secret_rule(receiver.url))
    receiver.status = 500
    env = {"CRM_TOKEN": SECRET, "ADMIN_PW": ADMIN}
    with (
        serving("-r", rules, "--admin-env", "ADMIN_PW", env=env) as server,
        server.client() as http,
    ):
        assert http.post("/events", json=event(1, subject="s")).status_code == 202
        wait_for(lambda: len(log_json(cli, db_file, "--status", "failed")) == 1, what="failed")
        delivery_id = log_json(cli, db_file)[0]["id"]
        anonymous = http.get(f"/deliveries/{delivery_id}").text
        assert 'id="replay"' not in anonymous and "Sign in as admin" in anonymous
        assert 'type="password"' in http.get("/login").text
        wrong = http.post("/login", data={"password": "guess", "next": "/"})
        assert wrong.status_code == 401 and "hookctl_admin" not in wrong.headers.get(
            "set-cookie", ""
        )
        page = http.get(f"/deliveries/{delivery_id}", auth=("admin", ADMIN)).text
        token = re.search(r'name="token" value="([0-9a-f]+)"', page)[1]
        url = f"/deliveries/{delivery_id}/replay"
        # Not signed in; signed in without the page's token; from another site.
        assert http.post(url, data={"token": token}).status_code == 401
        assert http.post(url, data={"token": "0" * 64}, auth=("a", ADMIN)).status_code == 403
        cross = http.post(
            url,
            data={"token": token},
            auth=("a", ADMIN),
            headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        )
        assert cross.status_code == 403
        assert receiver.arrived() == 1
        receiver.status = 200
        done = http.post(url, data={"token": token}, auth=("a", ADMIN))
        assert done.status_code == 303 and done.headers["Location"].endswith("?replayed=1")
        wait_for(lambda: receiver.arrived() == 2, what="the replay")
        wait_for(lambda: log_json(cli, db_file)[0]["status"] == "succeeded", what="replay recorded")
        shown = http.get(done.headers["Location"], auth=("a", ADMIN)).text
        assert "Queued again" in shown and SECRET not in shown
        # The sign-in form's session cookie makes an admin too (HttpOnly, SameSite=Strict).
        signed = http.post("/login", data={"password": ADMIN, "next": f"/deliveries/{delivery_id}"})
        assert signed.status_code == 303
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert 'id="replay"' in http.get(f"/deliveries/{delivery_id}").text


def test_a_bad_since_filter_is_a_400_page_on_both_pages(rule_file, receiver):
    rules = rule_file(secret_rule(receiver.url))
    with serving("-r", rules, env={"CRM_TOKEN": SECRET}) as server, server.client() as http:
        for path in ("/", "/events"):
            bad = http.get(path, params={"since": "zz"})
            assert bad.status_code == 400 and "Bad filter" in bad.text, path
            assert http.get(path, params={"since": "1h"}).status_code == 200, path
