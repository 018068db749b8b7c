"""``bms-gateway run`` as a child process, for the tests that need the real service beside them."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
START_S = 60.0
"""How long the child may take to show what the test waits for (start-up of a child on a loaded machine)."""


def status_of(status_port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{status_port}/status", timeout=5) as answer:
        document: dict[str, Any] = json.load(answer)
        return document


@contextlib.contextmanager
def gateway_process(
    config: Path, status_port: int, ready: Callable[[dict[str, Any]], bool]
) -> Iterator[subprocess.Popen[str]]:
    """The child, yielded once its status document satisfies ``ready``; terminated on exit."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "-c", str(config)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + START_S
        while True:
            assert process.poll() is None, process.communicate()[1]
            with contextlib.suppress(OSError):
                if ready(status_of(status_port)):
                    break
            assert time.monotonic() < deadline, f"the service never showed what the test waits for: {ready.__doc__}"
            time.sleep(0.2)  # polling a child process's start-up, not a timed assertion
        yield process
    finally:
        process.terminate()
        process.communicate(timeout=30)
