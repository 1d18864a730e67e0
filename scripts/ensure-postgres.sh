#!/bin/sh
# ensure-postgres.sh: orderly's managed PostgreSQL needs the server binaries
# (initdb, pg_ctl, postgres). Install them when missing and we can.
set -eu
. "$(dirname "$0")/apt.sh"
if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then exit 0; fi
for d in /usr/lib/postgresql/*/bin; do
	if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then exit 0; fi
done
apt_install "PostgreSQL server binaries not found: installing the Debian postgresql package" postgresql
cat >&2 <<'MSG'
PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under /usr/lib/postgresql/*/bin.
Install them (Debian/Ubuntu: sudo apt-get install postgresql; Fedora: sudo dnf install postgresql-server;
macOS: brew install postgresql) or run orderly against an existing server with --database-url.
MSG
exit 1
