"""The supply chain: deploy/requirements.lock pins every runtime dependency with its hashes, and install.sh
installs exactly that (``--require-hashes``), then the gateway as a wheel with ``--no-deps``, never upgrades
unless asked (``--upgrade``), and on 32-bit ARM, where piwheels serves other wheels, needs ``--unlocked``.

install.sh runs for real against a scratch root with a stand-in Python that records every call instead of
running pip, so each test sees the exact pip command lines a real install would run."""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "deploy" / "requirements.lock"
INSTALL_SH = REPO / "deploy" / "install.sh"


def locked_pins() -> dict[str, tuple[str, list[str]]]:
    """The lock's requirements: canonical name -> (pinned version, its sha256 hashes)."""
    pins: dict[str, tuple[str, list[str]]] = {}
    logical = LOCK.read_text(encoding="utf-8").replace("\\\n", " ")
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        requirement, *options = line.split(" --hash=")
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)(\s*;.*)?", requirement.strip())
        assert match, f"not an exact pin: {line}"
        pins[canonicalize_name(match[1])] = (match[2], [option.strip() for option in options])
    return pins


def runtime_requirements() -> list[Requirement]:
    """pyproject's core dependencies and those of the extras a Pi installs (mqtt, metrics)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    listed = project["dependencies"] + project["optional-dependencies"]["mqtt"]
    listed += project["optional-dependencies"]["metrics"]
    return [Requirement(text) for text in listed]


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    pins = locked_pins()
    for name, (_version, hashes) in pins.items():
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), f"{name}: {hashes}"
    # Every direct dependency, at a version pyproject allows (a stale lock after a pyproject change fails here).
    build = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["build-system"]["requires"]
    for requirement in runtime_requirements() + [Requirement(text) for text in build]:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in deploy/requirements.lock: run make lock"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), f"{requirement}: {pins[name][0]}"
    # And every dependency of theirs, as installed in this venv (markers evaluated here, extras not taken).
    seen: set[str] = set()
    pending = [canonicalize_name(r.name) for r in runtime_requirements()]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in importlib.metadata.requires(name) or []:
            dependency = Requirement(text)
            if dependency.marker is None or dependency.marker.evaluate({"extra": ""}):
                pending.append(canonicalize_name(dependency.name))
    assert seen - set(pins) == set(), "run make lock"
    make = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^lock: ", make, re.M) and "--generate-hashes" in make and "-o deploy/requirements.lock" in make


# --- install.sh with a stand-in Python ---------------------------------------------------------------------------

# Records each call (shell-quoted) in $FAKE_LOG. `-m venv DIR` makes a venv of stand-ins; `pip wheel` leaves a
# wheel; installing the gateway's wheel (or, offline, the name) creates bin/bms-gateway; `-r FILE` copies FILE
# into the log; `-c` answers the platform probe with $FAKE_PLATFORM ("machine pointer-bits").
FAKE_PYTHON = r"""#!/usr/bin/env bash
printf '%q ' "$@" >> "$FAKE_LOG"; echo >> "$FAKE_LOG"
bin="$(cd "$(dirname "$0")" && pwd)"
if [ "$1" = -c ]; then
    case "$2" in *calcsize*) echo "${FAKE_PLATFORM:-x86_64 64}" ;; esac
    exit 0
fi
if [ "$1 $2" = "-m venv" ]; then
    mkdir -p "$3/bin" && cp "$0" "$3/bin/python"
    exit 0
fi
[ "$1 $2" = "-m pip" ] || exit 3
previous=""
for arg in "$@"; do
    case "$previous" in
        --wheel-dir) touch "$arg/bms_gateway-0.1.0-py3-none-any.whl" ;;
        -r) sed 's/^/    | /' "$arg" >> "$FAKE_LOG" ;;
    esac
    case "$arg" in
        *.whl|bms-gateway) printf '#!/bin/sh\necho "bms-gateway 0.1.0"\n' > "$bin/bms-gateway"
                           chmod +x "$bin/bms-gateway" ;;
    esac
    previous="$arg"
done
"""


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    program = tmp_path / "python3"
    program.write_text(FAKE_PYTHON, encoding="utf-8")
    program.chmod(0o755)
    return program


def run_install(
    root: Path, fake_python: Path, *options: str, platform: str = "x86_64 64"
) -> tuple[subprocess.CompletedProcess[str], list[list[str]], str]:
    """install.sh into ``root``; returns the result, the pip calls made (argv after ``-m pip``) and the log."""
    log = root.parent / "python-calls.log"
    log.write_text("", encoding="utf-8")
    result = subprocess.run(
        ["bash", str(INSTALL_SH), "--root", str(root), "--no-systemctl", "--python", str(fake_python), *options],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "FAKE_LOG": str(log), "FAKE_PLATFORM": platform},
    )
    text = log.read_text(encoding="utf-8")
    calls = [shlex.split(line) for line in text.splitlines() if not line.startswith("    | ")]
    pip_calls = [call[2:] for call in calls if call[:2] == ["-m", "pip"]]
    pip_calls = [[arg for arg in call if arg != "--disable-pip-version-check"] for call in pip_calls]
    return result, pip_calls, text


def assert_locked_install(pip_calls: list[list[str]]) -> None:
    """The dependencies from the lock with hashes, the gateway alone, and nothing that upgrades from the index."""
    installs = [call for call in pip_calls if call[0] == "install"]
    assert len(installs) == 2, pip_calls
    lock_install, gateway_install = installs
    assert "--require-hashes" in lock_install and lock_install[-2:] == ["-r", str(LOCK)]
    assert "--no-deps" in gateway_install and "--no-index" in gateway_install
    assert gateway_install[-1].endswith("bms_gateway-0.1.0-py3-none-any.whl")
    wheel = next(call for call in pip_calls if call[0] == "wheel")
    assert {"--no-deps", "--no-build-isolation", "--no-index"} <= set(wheel) and wheel[-1] == str(REPO)
    assert ["check"] in pip_calls
    for call in pip_calls:
        assert "--upgrade" not in call and "-U" not in call, call


def test_install_takes_the_lock_with_hashes_and_the_gateway_without_dependencies(
    tmp_path: Path, fake_python: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    result, pip_calls, _ = run_install(root, fake_python)
    assert result.returncode == 0, result.stderr
    assert_locked_install(pip_calls)
    assert "installed  the dependencies of deploy/requirements.lock (hashes checked)" in result.stdout
    assert "installed  /opt/bms-gateway/venv: bms-gateway 0.1.0" in result.stdout


def test_install_keeps_an_installed_package_unless_asked_to_upgrade(tmp_path: Path, fake_python: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    assert run_install(root, fake_python)[0].returncode == 0

    result, pip_calls, _ = run_install(root, fake_python)
    assert result.returncode == 0, result.stderr
    assert pip_calls == [], "a rerun without --upgrade ran pip"
    assert "kept       /opt/bms-gateway/venv: bms-gateway 0.1.0 (--upgrade replaces it)" in result.stdout

    result, pip_calls, _ = run_install(root, fake_python, "--upgrade")
    assert result.returncode == 0, result.stderr
    assert_locked_install(pip_calls)
    assert "--force-reinstall" in [call for call in pip_calls if call[0] == "install"][1]


def test_install_on_32bit_arm_needs_unlocked_and_then_installs_the_same_pins(tmp_path: Path, fake_python: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    result, pip_calls, _ = run_install(root, fake_python, platform="armv7l 32")
    assert result.returncode == 2
    assert "note       32-bit ARM (armv7l): piwheels serves other wheels" in result.stdout
    assert result.stderr.startswith("install.sh: error: the lock's hashes cannot be checked on 32-bit ARM: pass")
    assert [call for call in pip_calls if call[0] in ("install", "wheel")] == [], "installed something anyway"

    # A 32-bit userland on a 64-bit kernel reports aarch64: the pointer size decides.
    result, pip_calls, log = run_install(root, fake_python, "--unlocked", platform="aarch64 32")
    assert result.returncode == 0, result.stderr
    lock_install = next(call for call in pip_calls if call[0] == "install")
    assert "--require-hashes" not in lock_install and lock_install[-2] == "-r"
    handed_to_pip = [line[6:] for line in log.splitlines() if line.startswith("    | ")]
    pins = [line for line in handed_to_pip if line.strip() and not line.lstrip().startswith("#")]
    assert "--hash" not in "\n".join(handed_to_pip)
    assert sorted(re.split(r"==| ;", pin)[0] for pin in pins) == sorted(locked_pins()), "the same pins"
    assert all(re.fullmatch(r"[a-z0-9-]+==[^\s\\]+( ; .*)?", pin) for pin in pins), pins
    assert "installed  the dependencies of deploy/requirements.lock, unchecked (--unlocked)" in result.stdout


def test_an_extra_outside_the_lock_needs_unlocked(tmp_path: Path, fake_python: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    result, pip_calls, log = run_install(root, fake_python, "--extras", "mqtt,relay")
    assert result.returncode == 2 and log == "" and result.stdout == ""
    assert result.stderr == (
        "install.sh: error: extra relay (gpiod) is not in deploy/requirements.lock: pass --unlocked to install it "
        "from the index unchecked\n"
    )
    result, pip_calls, _ = run_install(root, fake_python, "--extras", "mqtt,relay", "--unlocked")
    assert result.returncode == 0, result.stderr
    installs = [call for call in pip_calls if call[0] == "install"]
    assert "--require-hashes" in installs[0], "the lock is still checked"
    assert installs[2][-1] == "bms-gateway[relay]"
