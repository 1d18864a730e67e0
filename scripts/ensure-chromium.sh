#!/bin/sh
# ensure-chromium.sh: the web UI tests (api/ui_browser_test.go) drive a
# real headless Chromium. Install the Debian chromium package when it is
# missing and we can.
set -eu
for b in chromium chromium-browser google-chrome; do
	if command -v "$b" >/dev/null 2>&1; then exit 0; fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "Chromium not found: installing the Debian chromium package" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq chromium >/dev/null
	exit 0
fi
echo "Chromium not found: install it (Debian/Ubuntu: sudo apt-get install chromium) for the web UI tests" >&2
exit 1
