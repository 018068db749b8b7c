"""deploy/: the systemd unit (static checks, and ``systemd-analyze verify`` where it exists), the networkd and
udev files, the Dockerfile, and ``install.sh --root`` run twice (same manifest of hashes; an edited config
survives)."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "bms-gateway.service"
EXEC = "/opt/bms-gateway/venv/bin/bms-gateway"


def unit_file(path: Path) -> dict[str, dict[str, list[str]]]:
    """systemd's INI dialect: sections of keys, a key may repeat (each value kept), ``#`` comments."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"{path.name}: key before any section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key=value line: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_unit_has_notify_watchdog_restart_and_hardening() -> None:
    unit = unit_file(UNIT)
    service = {key: values[-1] for key, values in unit["Service"].items()}
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert 5 <= int(service["WatchdogSec"]) <= 30
    assert service["Restart"] == "always" and service["RestartSec"] == "5"
    assert unit["Unit"]["StartLimitIntervalSec"] == ["0"], "never give up restarting"
    assert service["ExecStart"] == f"{EXEC} run -c /etc/bms-gateway/config.yaml"
    assert (service["User"], service["Group"]) == ("bms-gateway", "bms-gateway")
    assert "dialout" in service["SupplementaryGroups"].split()
    assert service["ProtectSystem"] == "strict"
    for key in ("ProtectHome", "PrivateTmp", "NoNewPrivileges", "ProtectKernelTunables", "ProtectKernelModules",
                "ProtectControlGroups", "RestrictNamespaces", "RestrictSUIDSGID", "LockPersonality"):  # fmt: skip
        assert service[key] == "yes", key
    assert service["CapabilityBoundingSet"] == "" and service["DevicePolicy"] == "closed"
    families = service["RestrictAddressFamilies"].split()
    assert {"AF_CAN", "AF_UNIX", "AF_INET", "AF_NETLINK"} <= set(families)
    allowed = {value.split()[0] for value in unit["Service"]["DeviceAllow"]}
    assert {"char-ttyUSB", "char-ttyACM", "char-ttyAMA", "char-gpiochip"} <= allowed
    # What would break serial ports and CAN sockets must not be there.
    for forbidden in ("PrivateDevices", "PrivateNetwork", "IPAddressDeny", "MemoryDenyWriteExecute"):
        assert forbidden not in service, forbidden
    assert "sys-subsystem-net-devices-can0.device" in unit["Unit"]["After"][0]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the static checks above stand in")
    # verify insists that ExecStart exists: point it at a program that does, keep every other line.
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text(encoding="utf-8").replace(EXEC, sys.executable), encoding="utf-8")
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not re.search(r"Unknown|Failed to parse|Invalid|ignoring", output), output


def test_networkd_brings_can0_up_at_500k_with_bus_off_restart() -> None:
    network = unit_file(DEPLOY / "80-can.network")
    assert network["Match"]["Name"] == ["can0"]
    assert network["CAN"]["BitRate"] == ["500K"]
    assert network["CAN"]["RestartSec"] == ["100ms"]
    assert network["Link"]["RequiredForOnline"] == ["no"]


def test_udev_example_gives_a_stable_name() -> None:
    rules = [
        line
        for line in (DEPLOY / "99-bms-gateway-rs485.rules").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules, "the example has one active rule"
    for rule in rules:
        assert 'SUBSYSTEM=="tty"' in rule and 'SYMLINK+="jkbms"' in rule
        assert re.search(r'ATTRS\{idVendor\}=="[0-9a-f]{4}"', rule) and 'GROUP="dialout"' in rule


def test_dockerfile_uses_host_devices_and_runs_the_gateway() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.1[1-9]", text, re.M)
    assert "--network host" in text and "--device /dev/ttyUSB0" in text
    assert "--require-hashes -r deploy/requirements.lock" in text and "--no-deps" in text
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    assert "!deploy/requirements.lock" in ignored.splitlines()
    assert "STOPSIGNAL SIGTERM" in text and "HEALTHCHECK" in text and "--max-age" in text
    assert 'CMD ["run", "-c", "/etc/bms-gateway/config.yaml"]' in text
    assert re.search(r"^USER bms-gateway$", text, re.M)


# --- install.sh -------------------------------------------------------------------------------------------------


def manifest(root: Path) -> dict[str, str]:
    """Every path under ``root``: its kind, mode and content hash (a symlink: its target)."""
    out = {}
    for path in sorted(root.rglob("*")):
        relative = "/" + str(path.relative_to(root))
        mode = oct(path.lstat().st_mode & 0o7777)
        if path.is_symlink():
            out[relative] = f"link {path.readlink()}"
        elif path.is_dir():
            out[relative] = f"dir {mode}"
        else:
            out[relative] = f"file {mode} {hashlib.sha256(path.read_bytes()).hexdigest()}"
    return out


def install(root: Path, *extra: str) -> str:
    systemctl = () if shutil.which("systemctl") else ("--no-systemctl",)
    result = subprocess.run(
        ["bash", str(DEPLOY / "install.sh"), "--root", str(root), "--no-pip", *systemctl, *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_install_twice_leaves_the_same_files_and_keeps_an_edited_config(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    first_out = install(root)
    first = manifest(root)
    for path in (
        "/etc/bms-gateway/config.yaml",
        "/etc/bms-gateway/config.yaml.example",
        "/etc/systemd/system/bms-gateway.service",
        "/etc/systemd/network/80-can.network",
        "/opt/bms-gateway/share/99-bms-gateway-rs485.rules",
    ):
        assert path in first, path
    assert first["/etc/bms-gateway/config.yaml"].startswith("file 0o640 "), "the config may hold the MQTT password"
    assert first["/etc/bms-gateway"] == "dir 0o750"
    if shutil.which("systemctl"):
        wants = "/etc/systemd/system/multi-user.target.wants/bms-gateway.service"
        assert first[wants] == "link /etc/systemd/system/bms-gateway.service", "the unit is enabled"
    assert "installed  /etc/bms-gateway/config.yaml" in first_out

    second_out = install(root)
    assert manifest(root) == first, "a second run changed files"
    assert "installed" not in second_out.replace("installed  /opt", "")

    config = root / "etc/bms-gateway/config.yaml"
    edited = config.read_text(encoding="utf-8").replace("port: /dev/ttyUSB0", "port: /dev/jkbms")
    config.write_text(edited, encoding="utf-8")
    third_out = install(root)
    assert config.read_text(encoding="utf-8") == edited, "the edited config was overwritten"
    assert "kept       /etc/bms-gateway/config.yaml (edited; never overwritten)" in third_out
    after = manifest(root)
    assert {k for k in after if after[k] != first[k]} == {"/etc/bms-gateway/config.yaml"}
    assert yaml.safe_load(edited)["bms"]["port"] == "/dev/jkbms"


def test_install_rejects_unknown_options(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(DEPLOY / "install.sh"), "--root", str(tmp_path), "--bogus"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr == "install.sh: error: unknown option --bogus (see --help)\n"
