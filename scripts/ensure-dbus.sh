#!/bin/sh
# ensure-dbus.sh: the actions' systemd test (worker/systemd) starts a real
# systemd user manager with its own session bus in a private mount
# namespace: it needs unshare (util-linux), dbus-daemon (dbus) and systemd.
# Install the Debian packages when they are missing and we can.
set -eu
if command -v unshare >/dev/null 2>&1 && command -v dbus-daemon >/dev/null 2>&1 && [ -x /lib/systemd/systemd ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "dbus-daemon or systemd not found: installing the Debian dbus, systemd and util-linux packages" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq dbus systemd util-linux >/dev/null
	exit 0
fi
echo "unshare, dbus-daemon or /lib/systemd/systemd not found: install util-linux, dbus and systemd (Debian/Ubuntu: sudo apt-get install util-linux dbus systemd)" >&2
exit 1
