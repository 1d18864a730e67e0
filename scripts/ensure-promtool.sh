#!/bin/sh
# ensure-promtool.sh: the tests check deploy/prometheus/ with promtool
# (`promtool check rules`, `promtool test rules`). Use the one on PATH, or
# bin/promtool; otherwise take it from Debian's prometheus package without
# installing the package (no service, no user): apt-get download, then
# extract promtool alone into bin/.
set -eu
cd "$(dirname "$0")/.."
. scripts/apt.sh
if command -v promtool >/dev/null 2>&1 || [ -x bin/promtool ]; then exit 0; fi
apt_extract prometheus promtool
echo "promtool not found: install Prometheus's promtool (Debian/Ubuntu: apt-get install prometheus) to check deploy/prometheus/" >&2
# Only CI must have it: there the test fails without it; elsewhere it skips.
[ "${CI:-}" != true ] || exit 1
