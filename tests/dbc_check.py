"""Loading the third-party DBC files of ``../shared/dbc`` for cross-checks with cantools.

The files sit in the shared research folder next to the repository (GPL-3.0 for the plewka DBC: never copied
into this repository). Without that folder a cross-check is skipped with the reason, except in CI
(``CI=true``), where it fails: the check must run there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

import pytest

SHARED_DBC_DIR: Final = Path(__file__).resolve().parents[1].parent / "shared" / "dbc"
THIRD_PARTY_DBC: Final = SHARED_DBC_DIR / "pylontech_plewka.dbc"
"""plewka/PylontechUSX00C_CAN2MQTT ``pylontech.dbc``: 0x305, 0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E."""


def load_dbc(path: Path) -> Any:
    """The cantools database at ``path``, loaded strictly; skip (or fail under ``CI=true``) when it is missing."""
    if not path.is_file():
        reason = f"{path} not found: the shared research folder ../shared is not next to the repository"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}; the DBC cross-check must run in CI")
        pytest.skip(reason)
    cantools = pytest.importorskip("cantools")
    return cantools.database.load_file(str(path), strict=True)
