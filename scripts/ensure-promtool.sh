#!/bin/sh
# ensure-promtool.sh: the tests check deploy/prometheus/ with promtool
# (`promtool check rules`, `promtool test rules`). Use the one on PATH, or
# bin/promtool; otherwise take it from Debian's prometheus package without
# installing the package (no service, no user): apt-get download, then
# extract promtool alone into bin/.
set -eu
cd "$(dirname "$0")/.."
if command -v promtool >/dev/null 2>&1 || [ -x bin/promtool ]; then exit 0; fi
if command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	if [ "$(id -u)" = 0 ]; then
		apt-get update -qq
		chmod 0777 "$tmp" # apt downloads as the _apt user
	fi
	echo "promtool not found: extracting it from the Debian prometheus package into bin/" >&2
	(cd "$tmp" && apt-get download -qq prometheus)
	dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
	mkdir -p bin
	cp "$tmp/x/usr/bin/promtool" bin/promtool
	exit 0
fi
echo "promtool not found: install Prometheus's promtool (Debian/Ubuntu: apt-get install prometheus) to check deploy/prometheus/" >&2
# Only CI must have it: there the test fails without it; elsewhere it skips.
[ "${CI:-}" != true ] || exit 1
