#!/bin/sh
# ensure-chromium.sh: the web UI tests (api/ui_browser_test.go) drive a
# real headless Chromium. Install the Debian chromium package when it is
# missing and we can.
set -eu
. "$(dirname "$0")/apt.sh"
for b in chromium chromium-browser google-chrome; do
	if command -v "$b" >/dev/null 2>&1; then exit 0; fi
done
apt_install "Chromium not found: installing the Debian chromium package" chromium
echo "Chromium not found: install it (Debian/Ubuntu: sudo apt-get install chromium) for the web UI tests" >&2
exit 1
