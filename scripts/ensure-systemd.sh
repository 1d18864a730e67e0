#!/bin/sh
# ensure-systemd.sh: the units test (deploy/systemd) runs systemd-analyze
# and the socket activation test runs systemd-socket-activate. Neither
# needs systemd to be running; install the Debian systemd package when
# they are missing and we can.
set -eu
. "$(dirname "$0")/apt.sh"
if command -v systemd-analyze >/dev/null 2>&1 && command -v systemd-socket-activate >/dev/null 2>&1; then exit 0; fi
apt_install "systemd-analyze not found: installing the Debian systemd package" systemd
echo "systemd-analyze and systemd-socket-activate not found: install systemd (Debian/Ubuntu: sudo apt-get install systemd)" >&2
exit 1
