#!/bin/sh
# ensure-webhook.sh: `make bench` measures orderly against a peer in the same
# run, adnanh's webhook (Debian package `webhook`) running /bin/true. Only the
# bench uses it; `make test` never needs it. Use the one on PATH, or
# bin/webhook; otherwise take it from the Debian package without installing
# the package (no service, no user): apt-get download, then extract the
# binary alone into bin/. Without apt the bench says "peer: not measured".
set -eu
cd "$(dirname "$0")/.."
if command -v webhook >/dev/null 2>&1 || [ -x bin/webhook ]; then exit 0; fi
if command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	if [ "$(id -u)" = 0 ]; then
		apt-get update -qq
		chmod 0777 "$tmp" # apt downloads as the _apt user
	fi
	echo "webhook not found: extracting it from the Debian webhook package into bin/" >&2
	(cd "$tmp" && apt-get download -qq webhook)
	dpkg-deb -x "$tmp"/webhook_*.deb "$tmp/x"
	mkdir -p bin
	cp "$tmp/x/usr/bin/webhook" bin/webhook
	exit 0
fi
echo "webhook not found and no apt-get: the bench runs without its peer" >&2
