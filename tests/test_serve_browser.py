"""`serve`'s log page in a real browser: Debian's headless Chromium driven by Selenium.

Load the log, filter it, open a delivery, press replay (signed in as admin); then the events
page: filter it, open an event, press fire again. The secrets the rule sends never appear in
any page's source. Skips where Chromium is not installed, which CI (CI=true) counts as a
failure: .ci/run installs it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.receivers import Receiver, event, wait_for
from tests.serving import log_json, serving
from tests.test_serve_page import ADMIN, SECRET, secret_rule

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=390,844",  # a phone's screen
)


@pytest.fixture
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="hookctl-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def test_log_page_in_a_browser(browser, cli, rule_file, receiver, db_file):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    rules = rule_file(secret_rule(receiver.url))
    env = {"CRM_TOKEN": SECRET, "ADMIN_PW": ADMIN}
    with serving("-r", rules, "--admin-env", "ADMIN_PW", env=env) as server:
        with server.client() as http:
            assert http.post("/events", json=event(1, subject="first")).status_code == 202
            wait_for(lambda: receiver.arrived() == 1, what="the first delivery")
            receiver.status = 500
            assert http.post("/events", json=event(2, subject="second")).status_code == 202
            wait_for(lambda: len(log_json(cli, db_file, "--status", "failed")) == 1, what="fail")
        sources = []
        browser.get(server.url + "/")
        sources.append(browser.page_source)
        assert "read-only" in browser.page_source
        assert browser.find_element(By.LINK_TEXT, "sign in as admin")
        browser.find_element(By.LINK_TEXT, "sign in as admin").click()
        browser.find_element(By.ID, "password").send_keys(ADMIN)
        browser.find_element(By.ID, "sign-in").click()
        wait_for(lambda: "signed in as admin" in browser.page_source, what="signed in")
        sources.append(browser.page_source)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#log a.open")) == 2
        assert "signed in as admin" in browser.page_source
        # The phone layout: no horizontal scrolling.
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= browser.execute_script("return window.innerWidth") + 1
        Select(browser.find_element(By.ID, "f-status")).select_by_value("failed")
        browser.find_element(By.ID, "f-apply").click()
        wait_for(lambda: "status=failed" in browser.current_url, what="the filtered log")
        sources.append(browser.page_source)
        rows = browser.find_elements(By.CSS_SELECTOR, "#log a.open")
        assert len(rows) == 1
        rows[0].click()
        wait_for(lambda: "/deliveries/" in browser.current_url, what="the delivery page")
        sources.append(browser.page_source)
        assert browser.find_element(By.ID, "status").text == "failed"
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= browser.execute_script("return window.innerWidth") + 1
        assert "Bearer ${CRM_TOKEN}" in browser.find_element(By.ID, "request").text
        receiver.status = 200
        browser.find_element(By.ID, "replay").click()
        wait_for(lambda: "replayed=1" in browser.current_url, what="the replay's answer")
        sources.append(browser.page_source)
        assert "Queued again" in browser.find_element(By.ID, "message").text
        wait_for(lambda: receiver.arrived() == 3, what="the replayed request")
        wait_for(
            lambda: {r["status"] for r in log_json(cli, db_file)} == {"succeeded"},
            what="the replay recorded",
        )
        browser.refresh()
        sources.append(browser.page_source)
        # The events page: filter to the second event, open it, fire it again.
        browser.find_element(By.ID, "nav-events").click()
        wait_for(lambda: "/events" in browser.current_url, what="the events page")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#events a.open")) == 2
        browser.find_element(By.ID, "e-id").send_keys("evt_2")
        browser.find_element(By.ID, "e-apply").click()
        wait_for(lambda: "id=evt_2" in browser.current_url, what="the filtered events")
        sources.append(browser.page_source)
        rows = browser.find_elements(By.CSS_SELECTOR, "#events a.open")
        assert len(rows) == 1
        rows[0].click()
        wait_for(lambda: "/events/evt_" in browser.current_url, what="the event page")
        sources.append(browser.page_source)
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= browser.execute_script("return window.innerWidth") + 1
        assert '"second"' in browser.find_element(By.ID, "json").text
        browser.find_element(By.ID, "fire-again").click()
        wait_for(lambda: "fired=1" in browser.current_url, what="fire again's answer")
        sources.append(browser.page_source)
        assert "1 new delivery" in browser.find_element(By.ID, "message").text
        wait_for(lambda: receiver.arrived() == 4, what="the event fired again")
    for source in sources:
        assert SECRET not in source and ADMIN not in source
