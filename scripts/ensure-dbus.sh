#!/bin/sh
# ensure-dbus.sh: the actions' systemd test (worker/systemd) starts a real
# systemd user manager with its own session bus, and the polkit test
# (internal/action) a real polkitd on its own system bus, each in a private
# mount namespace: they need unshare and setpriv (util-linux), dbus-daemon
# (dbus), systemd, and polkitd with pkcheck (polkitd). Install the Debian
# packages when they are missing and we can.
set -eu
. "$(dirname "$0")/apt.sh"
if command -v unshare >/dev/null 2>&1 && command -v setpriv >/dev/null 2>&1 && command -v dbus-daemon >/dev/null 2>&1 &&
	[ -x /lib/systemd/systemd ] && command -v pkcheck >/dev/null 2>&1 && [ -x /usr/lib/polkit-1/polkitd ]; then exit 0; fi
apt_install "dbus-daemon, systemd or polkitd not found: installing the Debian dbus, systemd, polkitd and util-linux packages" dbus systemd polkitd util-linux
echo "unshare, setpriv, dbus-daemon, systemd or polkitd not found: install them (Debian/Ubuntu: sudo apt-get install util-linux dbus systemd polkitd)" >&2
exit 1
