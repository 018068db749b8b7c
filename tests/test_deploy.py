"""deploy/: the systemd unit (static checks, and ``systemd-analyze verify`` and ``security`` where it exists), the
networkd and udev files, the Dockerfile, and ``install.sh --root`` run twice (same manifest of hashes; an edited
config survives). What install.sh does with pip and the lock: tests/test_supply_chain.py."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.config import load_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "bms-gateway.service"
CAN_UNIT = DEPLOY / "bms-gateway-can@.service"
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
    # The serial and GPIO groups come from /etc/group, where install.sh puts the user (systemd applies them).
    assert "SupplementaryGroups" not in service
    install_sh = (DEPLOY / "install.sh").read_text(encoding="utf-8")
    assert re.search(r"for group in dialout gpio;.{0,200}usermod -a -G", install_sh, re.S)
    assert service["ProtectSystem"] == "strict"
    for key in ("ProtectHome", "PrivateTmp", "NoNewPrivileges", "ProtectKernelTunables", "ProtectKernelModules",
                "ProtectControlGroups", "RestrictNamespaces", "RestrictSUIDSGID", "LockPersonality"):  # fmt: skip
        assert service[key] == "yes", key
    assert service["CapabilityBoundingSet"] == "" and service["DevicePolicy"] == "closed"
    families = service["RestrictAddressFamilies"].split()
    assert {"AF_CAN", "AF_UNIX", "AF_INET", "AF_INET6"} == set(families)
    allowed = {value.split()[0] for value in unit["Service"]["DeviceAllow"]}
    assert {"char-ttyUSB", "char-ttyACM", "char-ttyAMA", "char-gpiochip"} <= allowed
    # What would break serial ports and CAN sockets (PrivateUsers: the device groups), the process metrics
    # (ProcSubset=pid hides /proc/stat) or the user's broker (an IP allow-list is a drop-in) must not be there.
    for forbidden in ("PrivateDevices", "PrivateNetwork", "PrivateUsers", "IPAddressDeny", "ProcSubset"):
        assert forbidden not in service, forbidden
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_waits_for_no_network_and_names_no_can_device() -> None:
    """network-online.target would pull systemd-networkd-wait-online (or NetworkManager-wait-online) into every
    boot; a hard-coded can0 device would tie the unit to one interface name. The gateway retries the bus itself."""
    dependencies = " ".join(
        " ".join(values)
        for key, values in unit_file(UNIT)["Unit"].items()
        if key in ("Wants", "Requires", "BindsTo", "After", "Requisite", "PartOf")
    )
    assert "network-online" not in dependencies
    assert "can0" not in dependencies and ".device" not in dependencies, dependencies


def test_unit_caps_resources_and_has_a_runtime_directory() -> None:
    service = {key: values[-1] for key, values in unit_file(UNIT)["Service"].items()}
    # The control socket's directory: group bms-gateway may enter, nobody else.
    assert (service["RuntimeDirectory"], service["RuntimeDirectoryMode"]) == ("bms-gateway", "0750")
    # Well below systemd's soft default of 1024, so a leak fails early; the listeners cap their clients below it.
    assert 256 <= int(service["LimitNOFILE"]) <= 1023
    assert 16 <= int(service["TasksMax"]) <= 256
    assert re.fullmatch(r"\d+M", service["MemoryMax"]) and 64 <= int(service["MemoryMax"][:-1]) <= 512
    assert service["PrivateMounts"] == "yes" and service["MemoryDenyWriteExecute"] == "yes"


def test_runtime_works_without_writable_executable_memory() -> None:
    """MemoryDenyWriteExecute=yes: the runtime's modules load, and a ctypes callback (libffi closures, used by some
    python-can drivers) still works, because libffi falls back to a double mapping when W+X memory is refused.
    The kernel's own switch (PR_SET_MDWE, Linux 6.3) refuses what systemd's seccomp filter refuses here."""
    probe = (
        "import ctypes, os, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "if libc.prctl(65, 1, 0, 0, 0) != 0:\n"  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN; kept across execve
        "    sys.exit(f'no PR_SET_MDWE: {os.strerror(ctypes.get_errno())}')\n"
        "os.execv(sys.executable, [sys.executable, '-c', sys.argv[1]])\n"
    )
    child = (
        "import ctypes, mmap\n"
        "import can, paho.mqtt.client, prometheus_client, pymodbus.server, serial, yaml\n"
        "import gateway.cli, gateway.runtime\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "    print('W+X allowed')\n"
        "except PermissionError:\n"
        "    print('W+X refused')\n"
        "libc = ctypes.CDLL(None)\n"
        "values = (ctypes.c_int * 3)(3, 1, 2)\n"
        "compare = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))\n"
        "libc.qsort(values, 3, ctypes.sizeof(ctypes.c_int), compare(lambda a, b: a[0] - b[0]))\n"
        "print(list(values))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, child], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0 and result.stderr.startswith("no PR_SET_MDWE"):
        pytest.skip(f"the kernel cannot refuse W+X memory to a process ({result.stderr.strip()})")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["W+X refused", "[1, 2, 3]"]


def test_systemd_analyze_security_at_most_1_6() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(UNIT)], capture_output=True, text=True, timeout=60
    )
    output = result.stdout + result.stderr
    if "--offline" in output and result.returncode != 0:
        pytest.skip(f"this systemd-analyze has no --offline (systemd 250 added it): {output.strip()}")
    level = re.search(r"Overall exposure level for bms-gateway\.service: (\d+\.\d)", output)
    assert level, output
    assert float(level.group(1)) <= 1.6, output


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


def test_can_unit_brings_its_interface_up_by_ip_link_when_it_appears(tmp_path: Path) -> None:
    can = unit_file(CAN_UNIT)
    service = can["Service"]
    assert service["Type"] == ["oneshot"] and service["RemainAfterExit"] == ["yes"]
    assert service["Environment"] == ["BITRATE=500000"]
    assert "ip link set %i up type can bitrate ${BITRATE} restart-ms 100" in service["ExecStart"]
    assert can["Unit"]["BindsTo"] == ["sys-subsystem-net-devices-%i.device"]
    assert can["Unit"]["Before"] == ["bms-gateway.service"]
    assert can["Install"]["WantedBy"] == ["sys-subsystem-net-devices-%i.device"]  # started by the interface
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the static checks above stand in")
    instance = tmp_path / "bms-gateway-can@can0.service"
    instance.write_text(CAN_UNIT.read_text(encoding="utf-8"), encoding="utf-8")
    result = subprocess.run([analyze, "verify", str(instance)], capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and not re.search(r"Unknown|Failed to parse|Invalid|ignoring", output), output


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


def install(root: Path, *extra: str, status: int = 0) -> str:
    """install.sh --root ``root`` --no-pip, stdin not a terminal (it must never prompt); its stdout (stderr when it
    fails as expected)."""
    systemctl = () if shutil.which("systemctl") else ("--no-systemctl",)
    result = subprocess.run(
        ["bash", str(DEPLOY / "install.sh"), "--root", str(root), "--no-pip", *systemctl, *extra],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == status, result.stdout + result.stderr
    return result.stdout if status == 0 else result.stderr


def test_install_twice_leaves_the_same_files_and_keeps_an_edited_config(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    first_out = install(root)
    first = manifest(root)
    for path in (
        "/etc/bms-gateway/config.yaml",
        "/etc/bms-gateway/config.yaml.example",
        "/etc/systemd/system/bms-gateway.service",
        "/etc/systemd/system/bms-gateway-can@.service",
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


def test_install_changes_no_network_stack_and_brings_can0_up_with_its_own_unit(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    out = install(root)
    files = manifest(root)
    assert not [path for path in files if "networkd" in path or path.startswith("/etc/systemd/network")], files
    assert not [path for path in files if "network-online" in path or "wait-online" in path], files
    if shutil.which("systemctl"):
        wants = "/etc/systemd/system/sys-subsystem-net-devices-can0.device.wants/bms-gateway-can@can0.service"
        assert files[wants] == "link /etc/systemd/system/bms-gateway-can@.service", "started when can0 appears"
    assert "no network stack was changed" in out
    # Without flags: the example, marked at its top and in the closing message as not yet the user's.
    config = (root / "etc/bms-gateway/config.yaml").read_text(encoding="utf-8")
    assert config.startswith("# EDIT ME: this is the example config")
    assert config.endswith((DEPLOY.parent / "config/example.yaml").read_text(encoding="utf-8"))
    assert "EDIT ME: /etc/bms-gateway/config.yaml is the example config" in out


def test_install_with_can_networkd_installs_the_network_file_only_then(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    install(root, "--can-networkd", "--can-channel", "can1")
    files = manifest(root)
    network = root / "etc/systemd/network/80-can.network"
    assert unit_file(network)["Match"]["Name"] == ["can1"]
    assert "/etc/systemd/system/bms-gateway-can@.service" not in files
    # A later run without the flag keeps networkd in charge: never two tools driving one interface.
    again = install(root)
    assert "kept       /etc/systemd/network/80-can.network: CAN stays with systemd-networkd" in again
    assert manifest(root) == files


def test_install_flags_write_a_minimal_config_the_gateway_accepts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    port = "/dev/serial/by-id/usb-FTDI_FT232R_A10KZ3-if00-port0"
    out = install(root, "--profile", "deye", "--bms-port", port, "--can-channel", "can1")
    path = root / "etc/bms-gateway/config.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert data == {
        "bms": {"port": port},
        "inverter": {"profile": "deye", "can": {"interface": "socketcan", "channel": "can1"}},
    }
    config = load_config(path)  # valid as it stands: every other key at its default
    assert (config.bms.port, config.inverter.profile) == (port, "deye")
    assert "Wrote a minimal config for profile deye" in out and "EDIT ME" not in out
    if shutil.which("systemctl"):
        assert "/etc/systemd/system/sys-subsystem-net-devices-can1.device.wants/bms-gateway-can@can1.service" in (
            manifest(root)
        )
    # An existing config is never replaced by the flags.
    again = install(root, "--profile", "sunsynk", "--bms-port", "/dev/ttyUSB1")
    assert yaml.safe_load(path.read_text(encoding="utf-8")) == data
    assert "kept       /etc/bms-gateway/config.yaml" in again or "unchanged" in again


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--profile", "deye"), "--profile needs --bms-port too"),
        (("--bms-port", "/dev/ttyUSB0"), "--bms-port needs --profile too"),
        (("--profile", "deyee", "--bms-port", "/dev/ttyUSB0"), "--profile deyee: no such CAN profile (built-in: "),
        (("--profile", "voltronic-rs485", "--bms-port", "/dev/ttyUSB0"), "is an RS485 profile"),
        (("--profile", "deye", "--bms-port", "ttyUSB0"), "expected a device path under /dev"),
        (("--can-channel", "can0; reboot"), "not an interface name"),
    ],
)
def test_install_refuses_bad_flags_in_one_line(flags: tuple[str, ...], message: str, tmp_path: Path) -> None:
    err = install(tmp_path, *flags, status=2)
    assert err.startswith("install.sh: error: ") and message in err and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir()), "nothing installed"
