"""``make screenshots``: the local page at phone and desktop width, as PNG, from a gateway on the simulator.

``python tests/page_screenshots.py [DIRECTORY]`` (default ``docs``) writes ``page-phone.png`` (390 px wide) and
``page-desktop.png`` (1280 px). The simulated BMS charges normally for a while, then one cell runs past the
charge cut-off, so the pictures show CCL 0 with its reason, the cell lines and a few events. Needs chromium
(``apt-get install chromium``) and the browser extra (``pip install -e '.[browser]'``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from page_chain import running_page
from playwright.sync_api import sync_playwright
from test_page_browser import CHROMIUM, WAIT_MS

NORMAL_SAMPLES = 60
"""History samples (one every 0.5 s) taken before the cell runs ahead, so the charts have a line to show."""


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "docs")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bms-page-") as tmp, running_page(Path(tmp)) as chain:
        chain.wait_for_status()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{chain.url}/")
            page.wait_for_selector('#conn[data-state="live"]', timeout=WAIT_MS)
            deadline = time.monotonic() + 120
            while len(chain.page_json()["history"]["raw"]["t"]) < NORMAL_SAMPLES and time.monotonic() < deadline:
                time.sleep(0.5)
            chain.bms.mode = "ovp"
            page.wait_for_function(
                "() => document.querySelector('#lim_charge_current_limit_a .val').textContent === '0.0 A'",
                timeout=WAIT_MS,
            )
            page.reload()  # the charts drawn with the whole history
            page.wait_for_selector('#conn[data-state="live"]', timeout=WAIT_MS)
            page.screenshot(path=str(out / "page-desktop.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})
            page.reload()
            page.wait_for_selector('#conn[data-state="live"]', timeout=WAIT_MS)
            page.screenshot(path=str(out / "page-phone.png"), full_page=False)
            browser.close()
    print(f"wrote {out / 'page-desktop.png'} and {out / 'page-phone.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
