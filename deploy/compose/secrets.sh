#!/bin/sh
# secrets.sh makes deploy/compose/secrets/, everything docker-compose.yaml
# reads from files instead of inline: one NATS nkey seed per role and per
# worker host with the cluster's auth.conf, both written by `orderly
# nats-auth` (the seeds kept in secrets/nats/, copied beside it for compose
# to mount), the PostgreSQL password with a pgpass file for orderly, the
# password of the workers' login with a pgpass file for them, and an admin
# API token with the API's config that accepts it (only its SHA-256 is in
# the config).
#
# Run it once before `docker compose up`; it keeps what already exists, so
# running it again only fills in what is missing. It runs orderly as
# $ORDERLY when set (a command: the image's, see docs/deploy.md), else the
# `orderly` on PATH, else this checkout's with `go run`. Arguments are
# given to `orderly nats-auth`: `--rotate web-2`, later `--retire-old
# web-2`, re-key web-2's worker without a gap (docs/deploy.md).
set -eu
cd "$(dirname "$0")"
here=$(pwd)
umask 077
mkdir -p secrets
chmod 0700 secrets

run_orderly() {
	if [ -n "${ORDERLY:-}" ]; then
		# shellcheck disable=SC2086 # $ORDERLY is a command and its arguments
		$ORDERLY "$@"
	elif command -v orderly >/dev/null 2>&1; then
		command orderly "$@"
	else
		go run -C "$here/../.." ./cmd/orderly "$@"
	fi
}
random() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }

# The seeds of a secrets/ made before nats-auth wrote them, kept: the
# workers and the API running with them stay accepted.
if [ ! -d secrets/nats ]; then
	mkdir secrets/nats
	for f in api.nk submitter.nk worker-web-1.nk worker-web-2.nk sys.nk; do
		to=$f
		[ "$f" = sys.nk ] && to=operator.nk
		if [ -s "secrets/$f" ]; then cp "secrets/$f" "secrets/nats/$to" && chmod 0600 "secrets/nats/$to"; fi
	done
fi
# One writer of the accounts layout: the one serve's embedded NATS runs
# (docs/deploy.md, "A NATS cluster"). Its seeds stay 0600 in their 0700
# directory, as nats-auth keeps them; compose mounts the copies.
run_orderly nats-auth --creds-dir "$here/secrets/nats" --workers web-1,web-2 --out "$here/secrets/auth.conf" "$@"
for f in api.nk submitter.nk worker-web-1.nk worker-web-2.nk operator.nk; do
	cp "secrets/nats/$f" "secrets/$f.new" && mv "secrets/$f.new" "secrets/$f"
done
rm -f secrets/sys.nk

[ -s secrets/pg_password ] || random >secrets/pg_password
# Any host: compose's "postgres" and Kubernetes' postgres.orderly.svc alike.
printf '*:5432:orderly:orderly:%s\n' "$(cat secrets/pg_password)" >secrets/pgpass
# The workers' login in the orderly_worker role, one for the whole fleet:
# deploy/postgres/worker-role.sql sets its password from worker_pg_password.
[ -s secrets/worker_pg_password ] || random >secrets/worker_pg_password
printf '*:5432:orderly:orderly_worker_fleet:%s\n' "$(cat secrets/worker_pg_password)" >secrets/worker.pgpass

if [ ! -s secrets/admin.token ]; then
	random >secrets/admin.token
fi
sum=$(printf %s "$(cat secrets/admin.token)" | sha256sum | cut -d' ' -f1)
sed "s/@ADMIN_TOKEN_SHA256@/$sum/" api.yaml >secrets/api.yaml

# Compose bind-mounts these files into the containers, whose processes run
# as non-root users of their own: the files must be readable there. The
# secrets directory (0700) is what keeps them from other users here.
# secrets/nats/, the seeds nats-auth keeps, is not mounted and stays as
# it made it.
find secrets -maxdepth 1 -type f -exec chmod 0644 {} +
echo "secrets written to $(pwd)/secrets; the admin token is in secrets/admin.token" >&2
