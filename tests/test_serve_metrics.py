"""`serve`'s GET /metrics and `stats --prometheus`, read back with prometheus_client's own parser."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.receivers import Receiver, event, rule_yaml, wait_for
from tests.serving import log_json, serving


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by name and labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def test_metrics_count_events_deliveries_attempts_and_the_queue(cli, rule_file, receiver, db_file):
    rules = rule_file(rule_yaml(receiver.url, name="to-crm"))
    rule_file(
        "name: dead\non: [ticket.created]\n"
        "webhook: {method: POST, url: 'http://127.0.0.1:9/hook'}\n"
        "retry: {every: 1h, retries: 3}\n"
    )
    with serving("-r", rules.parent) as server, server.client() as http:
        assert http.post("/events/zendesk", json=[event(1), event(2)]).status_code == 202
        assert http.post("/events", content="{bad").status_code == 400
        wait_for(lambda: receiver.arrived() >= 2, what="2 deliveries")
        wait_for(lambda: len(log_json(cli, db_file)) == 4, what="4 deliveries recorded")
        wait_for(
            lambda: (
                samples(http.get("/metrics").text).get(
                    ("hookctl_deliveries_total", (("outcome", "pending"), ("rule", "dead")))
                )
                == 2
            ),
            what="the dead host's attempts counted",
        )
        # The store's gauges may be a few seconds old (metrics.COUNTS_AGE): read until current.
        wait_for(
            lambda: (
                samples(http.get("/metrics").text).get(
                    ("hookctl_stored_deliveries", (("rule", "to-crm"), ("status", "succeeded")))
                )
                == 2
            ),
            what="the store's gauges up to date",
        )
        response = http.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    got = samples(response.text)
    assert got[("hookctl_events_received_total", (("source", "zendesk"),))] == 2
    assert (
        got[("hookctl_events_refused_total", (("reason", "bad_request"), ("source", "http")))] == 1
    )
    assert got[("hookctl_deliveries_total", (("outcome", "succeeded"), ("rule", "to-crm")))] == 2
    host = receiver.url.rsplit("/", 1)[0]
    assert got[("hookctl_attempts_total", (("host", host), ("status_class", "2xx")))] == 2
    assert (
        got[("hookctl_attempts_total", (("host", "http://127.0.0.1:9"), ("status_class", "error")))]
        == 2
    )
    assert got[("hookctl_attempt_duration_seconds_count", (("host", host),))] == 2
    assert got[("hookctl_stored_deliveries", (("rule", "dead"), ("status", "pending")))] == 2
    assert got[("hookctl_queue_depth", ())] == 2
    assert got[("hookctl_queue_due", ())] == 0  # retried in an hour
    assert got[("hookctl_oldest_due_age_seconds", ())] == 0
    # The same store figures for cron users, in the same format.
    result = cli("stats", "--db", db_file, "--prometheus")
    assert result.exit_code == 0
    offline = samples(result.stdout)
    for key in (
        ("hookctl_stored_deliveries", (("rule", "to-crm"), ("status", "succeeded"))),
        ("hookctl_stored_deliveries", (("rule", "dead"), ("status", "pending"))),
        ("hookctl_queue_depth", ()),
        ("hookctl_queue_due", ()),
    ):
        assert offline[key] == got[key], key
    assert not any(name.startswith("hookctl_events") for name, _ in offline)


# Tables of one row per endpoint (or per endpoint and rule), never per delivery: a scan is fine.
PER_ENDPOINT = {"SCAN endpoints", "SCAN endpoint_rates"}


def test_the_store_gauges_read_indexes_never_the_rows(tmp_path):
    """A scrape's cost must not grow with the log: every read is an index search or an
    index-only scan (on main it grouped the whole table and walked every pending row)."""
    from hookctl.serve import reads
    from hookctl.store import open_store
    from hookctl.store.ids import new_delivery_id
    from hookctl.store.records import NewDelivery

    now = time.time()
    store = open_store(tmp_path / "gauges.db")
    try:

        def delivery(n: int) -> NewDelivery:
            return NewDelivery(
                id=new_delivery_id(now), rule=f"rule-{n % 3}", event_id=f"evt_{n}",
                event_name="ticket.created", ticket=str(n), dedupe_key=None, method="POST",
                url="http://127.0.0.1:9/hook", request={"method": "POST"},
                policy={"preset": "none"}, timeout=3.0, accept="2xx-3xx",
            )  # fmt: skip

        store.enqueue([delivery(n) for n in range(30)], now=now)
        with store.traced() as statements:
            figures = reads.queue_figures(store, now + 5)
        assert figures.pending == figures.due == 30 and figures.oldest_due_age >= 5
        assert sum(c["pending"] for c in figures.by_rule.values()) == 30
        selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        assert selects
        for sql in selects:
            plan = store.query_plan(sql)
            rows = [
                step
                for step in plan
                if step.startswith("SCAN") and "COVERING INDEX" not in step
                and step not in PER_ENDPOINT
            ]  # fmt: skip
            assert not rows, f"{sql}\n{plan}"
    finally:
        store.close()


def test_endpoint_health_is_in_the_metrics_and_in_stats(cli, rule_file, receiver, db_file):
    healthy = Receiver().start()
    try:
        receiver.status = 500
        rules = rule_file(
            rule_yaml(
                receiver.url,
                name="failing",
                retry="{every: 1h, retries: 3}",
                extra="breaker: {failures: 2, probe: 1h}\n",
            )
        )
        rule_file(rule_yaml(healthy.url, name="limited", extra="rate: 5/s\n"))
        assert cli("endpoints", "pause", "http://127.0.0.1:9", "--reason", "moved").exit_code == 0
        failing = receiver.url.rsplit("/", 1)[0]
        limited = healthy.url.rsplit("/", 1)[0]
        with serving("-r", rules.parent) as server, server.client() as http:
            for n in range(3):
                assert http.post("/events", json=event(n)).status_code == 202
                wait_for(lambda n=n: receiver.arrived() >= min(n + 1, 2), what="an attempt")
            wait_for(
                lambda: (
                    samples(http.get("/metrics").text).get(
                        ("hookctl_endpoint_breaker_open", (("endpoint", failing),))
                    )
                    == 1
                ),
                what="the open breaker in the metrics",
            )
            got = samples(http.get("/metrics").text)
        assert got[("hookctl_endpoint_consecutive_failures", (("endpoint", failing),))] == 2
        assert got[("hookctl_endpoint_paused", (("endpoint", "http://127.0.0.1:9"),))] == 1
        assert got[("hookctl_endpoint_paused", (("endpoint", failing),))] == 0
        assert (
            0.2 <= got[("hookctl_endpoint_rate_interval_seconds", (("endpoint", limited),))] < 0.25
        )
        assert got[("hookctl_endpoint_breaker_open", (("endpoint", limited),))] == 0
        assert receiver.arrived() == 2  # open: the third waits for its probe, in an hour
        offline = samples(cli("stats", "--db", db_file, "--prometheus").stdout)
        for key, value in got.items():
            if key[0].startswith("hookctl_endpoint_") and key[0] != "hookctl_endpoint_hold_seconds":
                assert offline[key] == value, key
    finally:
        healthy.stop()


def test_refusals_before_the_checks_pass_never_name_a_made_up_source(rule_file, receiver):
    rules = rule_file(rule_yaml(receiver.url))
    env = {"INTAKE_TOKEN": "s3cret-intake"}
    with (
        serving("-r", rules, "--token-env", "INTAKE_TOKEN", env=env) as server,
        server.client() as http,
    ):
        wrong = {"Authorization": "Bearer nope"}
        for name in ("scan-1", "scan-2", "scan-3"):
            assert http.post(f"/events/{name}", json=event(1), headers=wrong).status_code == 401
        assert http.post("/events", json=event(2), headers=wrong).status_code == 401
        good = {"Authorization": "Bearer s3cret-intake"}
        assert http.post("/events/movidesk", json=event(3), headers=good).status_code == 202
        got = samples(http.get("/metrics").text)
    refused = {k: v for k, v in got.items() if k[0] == "hookctl_events_refused_total"}
    assert refused == {
        ("hookctl_events_refused_total", (("reason", "unauthorized"), ("source", "unverified"))): 3,
        ("hookctl_events_refused_total", (("reason", "unauthorized"), ("source", "http"))): 1,
    }
    assert got[("hookctl_events_received_total", (("source", "movidesk"),))] == 1
