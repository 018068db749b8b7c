#!/usr/bin/env bash
# Install bms-gateway as a systemd service: a virtual environment in /opt/bms-gateway/venv, the config in
# /etc/bms-gateway/, the unit (and a systemd-networkd file for can0) enabled. Safe to run again: files that are
# already right are left alone, an edited config is never overwritten, and an upgrade is the same command.
#
#   sudo deploy/install.sh                       # from a checkout, with the mqtt and metrics extras
#   sudo deploy/install.sh --extras mqtt,relay   # choose the extras ("" for none)
#   sudo deploy/install.sh --wheel-dir ./wheels  # offline: bms-gateway and its dependencies as wheels
#   deploy/install.sh --root /tmp/scratch --no-pip --no-systemctl   # a dry install into a scratch root
#
# Options:
#   --root DIR        install below DIR instead of / (no user is created; systemctl, if run, gets --root)
#   --extras LIST     comma-separated extras: mqtt, metrics, relay (default: mqtt,metrics)
#   --wheel-dir DIR   install from wheels in DIR only (pip --no-index --find-links DIR)
#   --python PY       the Python (>= 3.11) that creates the venv (default: python3)
#   --no-pip          do not create the venv nor run pip (tests; an already installed venv is kept)
#   --no-systemctl    do not run systemctl or udevadm
#   --no-can          do not install the systemd-networkd file for can0
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT=""
EXTRAS="mqtt,metrics"
WHEEL_DIR=""
PYTHON="python3"
NO_PIP=0
NO_SYSTEMCTL=0
WITH_CAN=1

PREFIX="/opt/bms-gateway"
CONFIG_DIR="/etc/bms-gateway"
UNIT_DIR="/etc/systemd/system"
NETWORK_DIR="/etc/systemd/network"
USER_NAME="bms-gateway"
UNIT="bms-gateway.service"

die() { echo "install.sh: error: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT="$2"; shift 2 ;;
        --extras) [ $# -ge 2 ] || die "--extras needs a list"; EXTRAS="$2"; shift 2 ;;
        --wheel-dir) [ $# -ge 2 ] || die "--wheel-dir needs a directory"; WHEEL_DIR="$2"; shift 2 ;;
        --python) [ $# -ge 2 ] || die "--python needs a program"; PYTHON="$2"; shift 2 ;;
        --no-pip) NO_PIP=1; shift ;;
        --no-systemctl) NO_SYSTEMCTL=1; shift ;;
        --no-can) WITH_CAN=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

if [ -n "$ROOT" ]; then
    [ -d "$ROOT" ] || die "--root $ROOT is not a directory"
    ROOT="$(cd "$ROOT" && pwd)"
    [ "$ROOT" = "/" ] && ROOT=""
fi
[ -z "$WHEEL_DIR" ] || [ -d "$WHEEL_DIR" ] || die "--wheel-dir $WHEEL_DIR is not a directory"
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (sudo), or use --root DIR for a scratch install"
fi

dest() { printf '%s%s' "$ROOT" "$1"; }

# A file we own: replaced whenever the shipped version differs.
put() {
    local src="$1" target mode="$3"
    target="$(dest "$2")"
    if [ -f "$target" ] && cmp -s "$src" "$target"; then
        chmod "$mode" "$target"
        echo "unchanged  $2"
    else
        install -D -m "$mode" "$src" "$target"
        echo "installed  $2"
    fi
}

# A file the user may edit: installed once, never overwritten.
put_once() {
    local src="$1" target mode="$3"
    target="$(dest "$2")"
    if [ ! -e "$target" ]; then
        install -D -m "$mode" "$src" "$target"
        echo "installed  $2"
        return 0
    fi
    if cmp -s "$src" "$target"; then
        echo "unchanged  $2"
    else
        echo "kept       $2 (edited; never overwritten)"
    fi
    return 1
}

# --- the user ---------------------------------------------------------------------------------------------
if [ -n "$ROOT" ]; then
    echo "skipped    user $USER_NAME (--root)"
else
    if ! id "$USER_NAME" >/dev/null 2>&1; then
        useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$USER_NAME"
        echo "created    user $USER_NAME"
    fi
    for group in dialout gpio; do  # serial adapters; GPIO for the fail-safe relay (Raspberry Pi OS)
        if getent group "$group" >/dev/null && ! id -nG "$USER_NAME" | tr ' ' '\n' | grep -qx "$group"; then
            usermod -a -G "$group" "$USER_NAME"
            echo "added      user $USER_NAME to group $group"
        fi
    done
fi

# --- the package ------------------------------------------------------------------------------------------
VENV="$(dest "$PREFIX/venv")"
if [ "$NO_PIP" -eq 1 ]; then
    echo "skipped    $PREFIX/venv (--no-pip)"
else
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
            || die "$PYTHON is older than 3.11: pass --python python3.11 (or newer)"
        "$PYTHON" -m venv "$VENV"
        echo "created    $PREFIX/venv"
    fi
    spec="$SRC"
    pip_args=(--quiet --disable-pip-version-check)
    if [ -n "$WHEEL_DIR" ]; then
        spec="bms-gateway"
        pip_args+=(--no-index --find-links "$WHEEL_DIR")
    fi
    [ -z "$EXTRAS" ] || spec="$spec[$EXTRAS]"
    "$VENV/bin/python" -m pip install "${pip_args[@]}" --upgrade "$spec"
    echo "installed  $PREFIX/venv: $("$VENV/bin/bms-gateway" --version)"
fi

# --- config -----------------------------------------------------------------------------------------------
install -d -m 0750 "$(dest "$CONFIG_DIR")"
new_config=0
if put_once "$SRC/config/example.yaml" "$CONFIG_DIR/config.yaml" 0640; then new_config=1; fi
put "$SRC/config/example.yaml" "$CONFIG_DIR/config.yaml.example" 0644
if [ -z "$ROOT" ]; then
    # The config may hold the MQTT password: readable by root and the service only.
    chgrp "$USER_NAME" "$CONFIG_DIR" "$CONFIG_DIR/config.yaml"
fi

# --- units, CAN, examples ---------------------------------------------------------------------------------
put "$SRC/deploy/$UNIT" "$UNIT_DIR/$UNIT" 0644
if [ "$WITH_CAN" -eq 1 ]; then
    put_once "$SRC/deploy/80-can.network" "$NETWORK_DIR/80-can.network" 0644 || true
fi
for file in README.md 99-bms-gateway-rs485.rules Dockerfile; do
    put "$SRC/deploy/$file" "$PREFIX/share/$file" 0644
done

# --- systemd ----------------------------------------------------------------------------------------------
if [ "$NO_SYSTEMCTL" -eq 1 ]; then
    echo "skipped    systemctl (--no-systemctl)"
elif [ -n "$ROOT" ]; then
    systemctl --root="$ROOT" enable "$UNIT"
else
    systemctl daemon-reload
    systemctl enable "$UNIT"
    if [ "$WITH_CAN" -eq 1 ]; then
        systemctl enable systemd-networkd.service
        if systemctl is-active --quiet systemd-networkd.service; then networkctl reload; fi
    fi
fi

echo
if [ "$new_config" -eq 1 ]; then
    echo "Next: edit $CONFIG_DIR/config.yaml (bms.port, inverter.profile), check it with"
    echo "  $PREFIX/venv/bin/bms-gateway check -c $CONFIG_DIR/config.yaml"
    echo "then start the service: systemctl start $UNIT"
else
    echo "Config kept. After an upgrade, run the new version with: systemctl restart $UNIT"
fi
