"""The local page in a real browser (issue 20): Debian's chromium, driven by playwright, loads the page from a
gateway running against the simulated BMS (:mod:`page_chain`).

It checks what a person sees: the SOC, a cell voltage and CCL equal ``/status``; a cell past the cut-off shows
CCL 0 with its reason; the page marks the data stale when the BMS goes silent; and every request the page makes
goes to its own origin. Every wait is for a condition on the page (values appearing), never a sleep.
Without chromium or playwright the test is skipped with the reason, except under ``CI=true``, where it fails
(``.ci/run`` installs both).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from page_chain import PageChain, running_page

CHROMIUM = os.environ.get("BMS_GATEWAY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
WAIT_MS = 20_000
"""Longest wait for a value to appear (the gateway subprocess starts in a second or two)."""


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}: .ci/run installs chromium and the browser extra")
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed: pip install -e '.[browser]'")
    if not os.access(CHROMIUM, os.X_OK):
        _missing(f"no chromium at {CHROMIUM}: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[PageChain]:
    with running_page(tmp_path) as chain:
        chain.wait_for_status()
        yield chain


def test_the_page_shows_status_values_ovp_and_staleness_from_its_origin_only(browser: Any, chain: PageChain) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(f"{chain.url}/")
    page.wait_for_selector('#conn[data-state="live"]', timeout=WAIT_MS)

    # The SOC, cell 1 and CCL shown are /status's: the page's values and /status, fetched together until they
    # come from one snapshot (the SOC rises while the test runs), then compared here.
    match = page.wait_for_function(
        """async () => {
            const status = await (await fetch("status", {cache: "no-store"})).json();
            const shown = [
                document.querySelector("#soc").textContent,
                document.querySelector('[data-group="battery"] [data-cell="1"] .v').textContent,
                document.querySelector("#lim_charge_current_limit_a .val").textContent,
            ];
            const state = status.bms.pack.state;
            const same = Number(shown[0]) === Math.round(state.soc_pct * 10) / 10
                && Number(shown[1]) === state.cell_voltages_v[0]
                && shown[2] === status.limits.charge_current_limit_a.toFixed(1) + " A";
            return same ? {shown, status} : null;
        }""",
        timeout=WAIT_MS,
        polling=250,
    ).json_value()
    state, limits = match["status"]["bms"]["pack"]["state"], match["status"]["limits"]
    soc, cell, ccl = match["shown"]
    assert float(soc) == pytest.approx(state["soc_pct"], abs=0.05)
    assert cell == f"{state['cell_voltages_v'][0]:.3f}"
    assert ccl == f"{limits['charge_current_limit_a']:.1f} A" and limits["charge_current_limit_a"] == 100.0

    # A cell past the cut-off (and toward OVP): CCL 0 with its reason.
    chain.bms.mode = "ovp"
    page.wait_for_function(
        "() => document.querySelector('#lim_charge_current_limit_a .val').textContent === '0.0 A'", timeout=WAIT_MS
    )
    reason = page.inner_text("#lim_charge_current_limit_a .reason")
    assert reason.startswith("cell 7 at 3.633 V"), reason
    assert reason == chain.status()["limits"]["reasons"]["charge_current_limit_a"]["reason"]
    assert page.inner_text("#lim_charge_current_limit_a .limiter") == "cell_voltage"
    assert "hi" in (page.get_attribute('[data-group="battery"] [data-cell="7"]', "class") or "")

    # The BMS goes silent: the page says the data is stale.
    chain.bms.mode = "silent"
    page.wait_for_selector('#conn[data-state="stale"]', timeout=WAIT_MS)
    assert page.inner_text("#banner").startswith("BMS data stale")

    origin = f"{chain.url}/"
    assert requests and all(url.startswith(origin) for url in requests), requests
    assert {url.removeprefix(chain.url) for url in requests} >= {"/", "/app.js", "/page.json", "/events"}


def test_the_page_says_when_the_gateway_is_unreachable(browser: Any, chain: PageChain) -> None:
    page = browser.new_page()
    page.goto(f"{chain.url}/")
    page.wait_for_selector('#conn[data-state="live"]', timeout=WAIT_MS)
    chain.process.terminate()
    chain.process.wait(timeout=10)
    page.wait_for_selector('#conn[data-state="unreachable"]', timeout=WAIT_MS)
    assert "unreachable" in page.inner_text("#banner")
