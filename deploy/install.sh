#!/usr/bin/env bash
# Install bms-gateway as a systemd service: a virtual environment in /opt/bms-gateway/venv, the config in
# /etc/bms-gateway/, the unit and bms-gateway-can@can0.service (brings can0 up with `ip link`) enabled. It changes
# no network stack: no systemd-networkd unless you ask for it (--can-networkd). Safe to run again: files that are
# already right are left alone, an edited config is never overwritten, and an installed package is kept
# unless you ask for --upgrade. The dependencies are exactly those of deploy/requirements.lock, each checked
# against its hashes (pip --require-hashes); bms-gateway itself is built from this checkout into a wheel and
# installed with --no-deps, so nothing else is fetched.
#
#   sudo deploy/install.sh                       # from a checkout (the lock holds the mqtt and metrics extras)
#   sudo deploy/install.sh --profile deye --bms-port /dev/serial/by-id/usb-FTDI_...-port0   # a minimal config
#   sudo deploy/install.sh --upgrade             # after a git pull: this checkout's version and lock
#   sudo deploy/install.sh --wheel-dir ./wheels  # offline: bms-gateway and the lock's wheels in a directory
#   deploy/install.sh --root /tmp/scratch --no-pip --no-systemctl   # a dry install into a scratch root
#
# Options:
#   --root DIR        install below DIR instead of / (no user is created; systemctl, if run, gets --root)
#   --upgrade         replace an installed package and its dependencies with this checkout's and the lock's
#   --unlocked        also install what cannot be checked against the lock's hashes: on 32-bit ARM (piwheels
#                     builds its own wheels) every dependency, pinned but unchecked; the relay extra's gpiod
#   --extras LIST     comma-separated extras beyond the lock's mqtt and metrics: relay (needs --unlocked)
#   --wheel-dir DIR   install from wheels in DIR only (pip --no-index --find-links DIR)
#   --python PY       the Python (>= 3.11) that creates the venv (default: python3)
#   --no-pip          do not create the venv nor run pip (tests; an already installed venv is kept)
#   --no-systemctl    do not run systemctl or udevadm
#   --profile NAME    with --bms-port: write a minimal config (profile, BMS port, CAN channel) instead of the
#   --bms-port PATH   example, when there is no config yet (an existing one is never touched); never a prompt
#   --can-channel IF  the SocketCAN interface (default can0): the config's inverter.can.channel and the instance
#                     of bms-gateway-can@.service that is enabled
#   --no-can          no CAN unit (an RS485 inverter, or a CAN interface another tool brings up)
#   --can-networkd    bring CAN up with systemd-networkd instead (installs 80-can.network and enables
#                     systemd-networkd, which on Debian 12 also enables systemd-networkd-wait-online: only where
#                     networkd already runs the network, never beside NetworkManager)
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT=""
EXTRAS="mqtt,metrics"
WHEEL_DIR=""
UPGRADE=0
UNLOCKED=0
PYTHON="python3"
NO_PIP=0
NO_SYSTEMCTL=0
WITH_CAN=1
CAN_NETWORKD=0
PROFILE=""
BMS_PORT=""
CAN_CHANNEL=""

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
        --upgrade) UPGRADE=1; shift ;;
        --unlocked) UNLOCKED=1; shift ;;
        --wheel-dir) [ $# -ge 2 ] || die "--wheel-dir needs a directory"; WHEEL_DIR="$2"; shift 2 ;;
        --python) [ $# -ge 2 ] || die "--python needs a program"; PYTHON="$2"; shift 2 ;;
        --no-pip) NO_PIP=1; shift ;;
        --no-systemctl) NO_SYSTEMCTL=1; shift ;;
        --no-can) WITH_CAN=0; shift ;;
        --can-networkd) CAN_NETWORKD=1; shift ;;
        --profile) [ $# -ge 2 ] || die "--profile needs a profile name"; PROFILE="$2"; shift 2 ;;
        --bms-port) [ $# -ge 2 ] || die "--bms-port needs a device path"; BMS_PORT="$2"; shift 2 ;;
        --can-channel) [ $# -ge 2 ] || die "--can-channel needs an interface name"; CAN_CHANNEL="$2"; shift 2 ;;
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
# The minimal config: --profile and --bms-port together (--can-channel alone only picks the CAN unit's interface).
if [ -n "$PROFILE$BMS_PORT" ]; then
    [ -n "$PROFILE" ] || die "--bms-port needs --profile too (the inverter's profile: bms-gateway profiles lists them)"
    [ -n "$BMS_PORT" ] || die "--profile needs --bms-port too (the BMS adapter, e.g. /dev/serial/by-id/usb-...)"
    case "$BMS_PORT" in /dev/*) ;; *) die "--bms-port $BMS_PORT: expected a device path under /dev" ;; esac
    case "$BMS_PORT" in *[!A-Za-z0-9_./:+-]*) die "--bms-port $BMS_PORT: unexpected characters in a device path" ;; esac
    if [ -f "$SRC/profiles/rs485/$PROFILE.yaml" ]; then
        die "--profile $PROFILE is an RS485 profile: install without --profile and set inverter.serial in the config"
    fi
    case "$PROFILE" in *[!a-z0-9-]*|"") die "--profile $PROFILE: not a built-in profile name" ;; esac
    if [ ! -f "$SRC/profiles/$PROFILE.yaml" ] \
        && ! grep -Eqs "^aliases: \[(.*[ ,])?$PROFILE[],]" "$SRC"/profiles/*.yaml; then
        known="$(cd "$SRC/profiles" && ls -- *.yaml | sed 's/\.yaml$//' | tr '\n' ' ')"
        die "--profile $PROFILE: no such CAN profile (built-in: ${known% })"
    fi
fi
CAN_CHANNEL="${CAN_CHANNEL:-can0}"
case "$CAN_CHANNEL" in *[!A-Za-z0-9_.-]*|"") die "--can-channel $CAN_CHANNEL: not an interface name" ;; esac
CAN_UNIT="bms-gateway-can@$CAN_CHANNEL.service"
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (sudo), or use --root DIR for a scratch install"
fi
# Extras whose packages are not in the lock (mqtt and metrics are): installed from the index, unchecked.
unlocked_extras=()
IFS=',' read -r -a wanted_extras <<< "$EXTRAS"
for extra in "${wanted_extras[@]}"; do
    case "$extra" in
        ""|mqtt|metrics) ;;
        relay) unlocked_extras+=("$extra") ;;
        *) die "unknown extra $extra (mqtt, metrics, relay)" ;;
    esac
done
extras_list="$(IFS=','; echo "${unlocked_extras[*]}")"
if [ -n "$extras_list" ] && [ "$UNLOCKED" -eq 0 ] && [ "$NO_PIP" -eq 0 ]; then
    die "extra $extras_list (gpiod) is not in deploy/requirements.lock: pass --unlocked to install it from the \
index unchecked"
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
LOCK="$SRC/deploy/requirements.lock"
if [ "$NO_PIP" -eq 1 ]; then
    echo "skipped    $PREFIX/venv (--no-pip)"
elif [ -x "$VENV/bin/bms-gateway" ] && [ "$UPGRADE" -eq 0 ]; then
    # Never an upgrade behind your back: a rerun (say for the unit) keeps the package you tested.
    echo "kept       $PREFIX/venv: $("$VENV/bin/bms-gateway" --version) (--upgrade replaces it)"
else
    [ -f "$LOCK" ] || die "$LOCK is missing (make lock writes it)"
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
            || die "$PYTHON is older than 3.11: pass --python python3.11 (or newer)"
        "$PYTHON" -m venv "$VENV"
        echo "created    $PREFIX/venv"
    fi
    pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
    quiet=(--quiet)
    find=()
    [ -z "$WHEEL_DIR" ] || find=(--no-index --find-links "$WHEEL_DIR")
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    # The lock's hashes are PyPI's files. On 32-bit ARM pip takes wheels from piwheels (Raspberry Pi OS
    # configures it in /etc/pip.conf), built there with other hashes: those cannot be checked.
    read -r machine pointer_bits < <("$VENV/bin/python" -c 'import platform, struct; print(platform.machine(), 8 * struct.calcsize("P"))')
    arm32=0
    case "$machine" in arm*|aarch64*) [ "$pointer_bits" != 32 ] || arm32=1 ;; esac
    if [ "$arm32" -eq 1 ]; then
        echo "note       32-bit ARM ($machine): piwheels serves other wheels than the ones whose hashes are in the lock"
        [ "$UNLOCKED" -eq 1 ] || die "the lock's hashes cannot be checked on 32-bit ARM: pass --unlocked to install \
its pinned versions unchecked, or use a 64-bit OS"
        # The same pins, without their hashes.
        sed -e '/^[[:space:]]*--hash=/d' -e 's/[[:space:]]*\\$//' "$LOCK" > "$work/unlocked.txt"
        "${pip[@]}" install "${quiet[@]}" "${find[@]}" -r "$work/unlocked.txt"
        echo "installed  the dependencies of deploy/requirements.lock, unchecked (--unlocked)"
    else
        "${pip[@]}" install "${quiet[@]}" "${find[@]}" --require-hashes -r "$LOCK"
        echo "installed  the dependencies of deploy/requirements.lock (hashes checked)"
    fi
    # The gateway itself, without its dependencies: the lock has them all (pip check below says so).
    if [ -n "$WHEEL_DIR" ]; then
        "${pip[@]}" install "${quiet[@]}" "${find[@]}" --no-deps --force-reinstall bms-gateway
    else
        # No build isolation: setuptools comes from the lock, not from the index. setuptools builds in the tree:
        # remove the build/ and egg-info this build leaves (a stale egg-info there says the wrong version to
        # anything run from the checkout), keep those that were there before.
        in_tree=()
        for made in build bms_gateway.egg-info; do [ -e "$SRC/$made" ] || in_tree+=("$SRC/$made"); done
        "${pip[@]}" wheel "${quiet[@]}" --no-index --no-deps --no-build-isolation --wheel-dir "$work" "$SRC"
        [ "${#in_tree[@]}" -eq 0 ] || rm -rf "${in_tree[@]}"
        "${pip[@]}" install "${quiet[@]}" --no-index --no-deps --force-reinstall "$work"/bms_gateway-*.whl
    fi
    if [ -n "$extras_list" ]; then
        "${pip[@]}" install "${quiet[@]}" "${find[@]}" "bms-gateway[$extras_list]"
        echo "installed  extra $extras_list, unchecked (--unlocked)"
    fi
    "${pip[@]}" check >/dev/null || die "the venv's packages do not fit together: $("${pip[@]}" check | head -n 3)"
    echo "installed  $PREFIX/venv: $("$VENV/bin/bms-gateway" --version)"
fi

# --- config -----------------------------------------------------------------------------------------------
install -d -m 0750 "$(dest "$CONFIG_DIR")"
config_src="$(mktemp)"
trap 'rm -f "$config_src"; [ -z "${work:-}" ] || rm -rf "$work"' EXIT
if [ -n "$PROFILE" ]; then
    # Only what this machine needs; every other key keeps its default (config.yaml.example lists them all).
    cat > "$config_src" <<EOF
# bms-gateway config, written by deploy/install.sh --profile $PROFILE --bms-port $BMS_PORT --can-channel $CAN_CHANNEL.
# Every other key has its default; $CONFIG_DIR/config.yaml.example documents them all (limits, mqtt, status, ...).
# Check it with: $PREFIX/venv/bin/bms-gateway check -c $CONFIG_DIR/config.yaml --bms
bms:
  port: $BMS_PORT
inverter:
  profile: $PROFILE
  can: {interface: socketcan, channel: $CAN_CHANNEL}
EOF
else
    { echo "# EDIT ME: this is the example config; set bms.port, inverter.profile and inverter.can (or inverter.serial)"
      echo "# for your machine, then check it: $PREFIX/venv/bin/bms-gateway check -c $CONFIG_DIR/config.yaml --bms"
      cat "$SRC/config/example.yaml"; } > "$config_src"
fi
new_config=0
if put_once "$config_src" "$CONFIG_DIR/config.yaml" 0640; then new_config=1; fi
put "$SRC/config/example.yaml" "$CONFIG_DIR/config.yaml.example" 0644
if [ -z "$ROOT" ]; then
    # The config may hold the MQTT password: readable by root and the service only.
    chgrp "$USER_NAME" "$CONFIG_DIR" "$CONFIG_DIR/config.yaml"
fi

# --- units, CAN, examples ---------------------------------------------------------------------------------
put "$SRC/deploy/$UNIT" "$UNIT_DIR/$UNIT" 0644
if [ "$WITH_CAN" -eq 1 ] && [ "$CAN_NETWORKD" -eq 0 ] && [ -e "$(dest "$NETWORK_DIR/80-can.network")" ]; then
    # An earlier install chose systemd-networkd: two tools must never both drive the interface.
    echo "kept       $NETWORK_DIR/80-can.network: CAN stays with systemd-networkd (delete it and run again for" \
        "bms-gateway-can@)"
    CAN_NETWORKD=1
fi
if [ "$WITH_CAN" -eq 1 ] && [ "$CAN_NETWORKD" -eq 1 ]; then
    sed "s/^Name=can0\$/Name=$CAN_CHANNEL/" "$SRC/deploy/80-can.network" > "$config_src.network"
    put_once "$config_src.network" "$NETWORK_DIR/80-can.network" 0644 || true
    rm -f "$config_src.network"
elif [ "$WITH_CAN" -eq 1 ]; then
    put "$SRC/deploy/bms-gateway-can@.service" "$UNIT_DIR/bms-gateway-can@.service" 0644
fi
for file in README.md 99-bms-gateway-rs485.rules Dockerfile; do
    put "$SRC/deploy/$file" "$PREFIX/share/$file" 0644
done

# --- systemd ----------------------------------------------------------------------------------------------
if [ "$NO_SYSTEMCTL" -eq 1 ]; then
    echo "skipped    systemctl (--no-systemctl)"
else
    systemctl=(systemctl)
    [ -z "$ROOT" ] || systemctl=(systemctl --root="$ROOT")
    [ -n "$ROOT" ] || systemctl daemon-reload
    "${systemctl[@]}" enable "$UNIT"
    if [ "$WITH_CAN" -eq 1 ] && [ "$CAN_NETWORKD" -eq 1 ] && [ -n "$ROOT" ]; then
        echo "skipped    enabling systemd-networkd (--root)"
    elif [ "$WITH_CAN" -eq 1 ] && [ "$CAN_NETWORKD" -eq 1 ]; then
        systemctl enable systemd-networkd.service  # asked for: --can-networkd
        if systemctl is-active --quiet systemd-networkd.service; then networkctl reload; fi
    elif [ "$WITH_CAN" -eq 1 ]; then
        # Started whenever the interface appears; now too if it is already there.
        "${systemctl[@]}" enable "$CAN_UNIT"
        if [ -z "$ROOT" ] && [ -e "/sys/class/net/$CAN_CHANNEL" ]; then systemctl start "$CAN_UNIT" || true; fi
    fi
fi

echo
if [ "$WITH_CAN" -eq 1 ] && [ "$CAN_NETWORKD" -eq 0 ]; then
    echo "CAN: $CAN_UNIT brings $CAN_CHANNEL up at 500 kbit/s whenever it appears (another bitrate:"
    echo "  systemctl edit $CAN_UNIT, Environment=BITRATE=250000); no network stack was changed."
fi
if [ "$new_config" -eq 1 ] && [ -n "$PROFILE" ]; then
    echo "Wrote a minimal config for profile $PROFILE, BMS on $BMS_PORT, CAN on $CAN_CHANNEL. Check it with"
    echo "  $PREFIX/venv/bin/bms-gateway check -c $CONFIG_DIR/config.yaml --bms"
    echo "then start the service: systemctl start $UNIT"
elif [ "$new_config" -eq 1 ]; then
    echo "EDIT ME: $CONFIG_DIR/config.yaml is the example config, not yet yours. Set bms.port, inverter.profile"
    echo "and inverter.can (or install on a fresh machine with --profile and --bms-port), check it with"
    echo "  $PREFIX/venv/bin/bms-gateway check -c $CONFIG_DIR/config.yaml --bms"
    echo "then start the service: systemctl start $UNIT"
else
    echo "Config kept. After an upgrade, run the new version with: systemctl restart $UNIT"
fi
