"""Ctrl-C during start-up ends the command quietly, with the interrupted exit status, wherever it lands.

The SIGINT is real and lands at a known point, not after a guessed delay: an import hook raises it (with
``signal.raise_signal``, handled by Python's own SIGINT handler before the call returns) when start-up first
imports the named module.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import EXIT_INTERRUPTED

REPO = Path(__file__).resolve().parent.parent

INTERRUPTED_AT_IMPORT = (
    "import runpy, signal, sys\n"
    "AT = sys.argv[1]\n"
    "class InterruptAt:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == AT:\n"
    "            sys.meta_path.remove(self)\n"
    "            signal.raise_signal(signal.SIGINT)\n"
    "        return None\n"
    "sys.meta_path.insert(0, InterruptAt())\n"
    "sys.argv = ['bms-gateway', *sys.argv[2:]]\n"
    "runpy.run_module('gateway', run_name='__main__')\n"
)
"""``python -m gateway ARGS`` that gets SIGINT when it first imports the module named by its first argument."""


@pytest.mark.parametrize(
    "module",
    [
        "pymodbus",  # the audit's traceback: a subcommand module's imports, while the parser is built
        "gateway.cli.demo",  # the last subcommand the parser imports
        "importlib.metadata",  # the version lookup, once run when the package gateway was imported, before main()
    ],
)
def test_ctrl_c_during_start_up_exits_130_without_a_traceback(tmp_path: Path, module: str) -> None:
    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN  # else the child would inherit an ignored SIGINT
    result = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_AT_IMPORT, module, "run", "-c", str(tmp_path / "config.yaml")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (EXIT_INTERRUPTED, "")
