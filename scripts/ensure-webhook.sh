#!/bin/sh
# ensure-webhook.sh: `make bench` measures orderly against a peer in the same
# run, adnanh's webhook (Debian package `webhook`) running /bin/true. Only the
# bench uses it; `make test` never needs it. Use the one on PATH, or
# bin/webhook; otherwise take it from the Debian package without installing
# the package (no service, no user): apt-get download, then extract the
# binary alone into bin/. Without apt the bench says "peer: not measured".
set -eu
cd "$(dirname "$0")/.."
. scripts/apt.sh
if command -v webhook >/dev/null 2>&1 || [ -x bin/webhook ]; then exit 0; fi
apt_extract webhook webhook
echo "webhook not found and no apt-get: the bench runs without its peer" >&2
