"""Shared test settings: the hypothesis fuzz budget.

``BMS_FUZZ_EXAMPLES=N`` makes every parser's fuzz test run N examples (``make fuzz``: 10,000). It is read here,
before any test module, and also handed on as ``JK_FUZZ_EXAMPLES``, which the JK fuzz modules read themselves.
Without it each module keeps its own, smaller default so that ``make test`` stays quick.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

FUZZ_EXAMPLES = os.environ.get("BMS_FUZZ_EXAMPLES")
if FUZZ_EXAMPLES:
    os.environ["JK_FUZZ_EXAMPLES"] = FUZZ_EXAMPLES
    settings.register_profile(
        "fuzz",
        max_examples=int(FUZZ_EXAMPLES),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    settings.load_profile("fuzz")


@pytest.fixture(autouse=True)
def own_state_directory(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test's gateway (in process or a child process) keeps its state in a directory of its own: never the
    user's ~/.local/state, and never a memory (or a BMS write record) another test left behind."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path_factory.mktemp("state")))
    # And its own runtime directory: a service's control socket is never another test's (gateway.control_socket).
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path_factory.mktemp("run")))
    # And its own serial lock directory: never /run/lock, where a test's LCK.. file could meet a real one
    # (gateway.transport.port_lock).
    monkeypatch.setenv("BMS_GATEWAY_LOCK_DIR", str(tmp_path_factory.mktemp("lock")))
