#!/bin/sh
# secrets.sh makes deploy/compose/secrets/, everything docker-compose.yaml
# reads from files instead of inline: one NATS nkey seed per role and per
# worker host, the cluster's auth.conf with their public keys (a copy of
# deploy/nats/auth.conf whose example keys are replaced), the PostgreSQL
# password with a pgpass file for orderly, the password of the workers'
# login with a pgpass file for them, and an admin API token with the API's
# config that accepts it (only its SHA-256 is in the config).
#
# Run it once before `docker compose up`; it keeps what already exists, so
# running it again only fills in what is missing. Needs `nk` on PATH or Go.
set -eu
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
chmod 0700 secrets

nkey() {
	if command -v nk >/dev/null 2>&1; then command nk "$@"; else go run github.com/nats-io/nkeys/nk@v0.4.16 "$@"; fi
}
random() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }

# The example public keys of deploy/nats/auth.conf, by role.
example_api=UD77C2I3Z2WMS3RZZ4Y6FLEMRBH43L2OFI5YVR7O67QOJPVBUUXTIG2H
example_submitter=UDAJIAHJZNTAOUSJPPBZOXDVJ6UGXWLILLNNANPNVHNRGIXG7EVYBMNY
example_worker_web_1=UBFI3V2AAPIEKG5XMJA27X6BYKSAW7FDWSVBOOPUME4LMRPI7VJI3OBI
example_worker_web_2=UD6NCLI2K4EVJ4FJ63DXQACEQANIDQK2XZ5H6FA6VCPPIPIN64TMDK2Q
example_sys=UB4NYTMQAKNPZC2UN4KHFIPT7MVDA5SNUUGZAW2B3FOX4KSJHMXSXBF2

script=""
for role in api submitter worker_web_1 worker_web_2 sys; do
	seed=secrets/$(echo "$role" | tr _ -).nk
	[ -s "$seed" ] || nkey -gen user >"$seed"
	pub=$(nkey -inkey "$seed" -pubout)
	eval "example=\$example_$role"
	script="$script -e s/$example/$pub/"
done
# shellcheck disable=SC2086 # $script is a list of sed arguments
sed $script ../nats/auth.conf >secrets/auth.conf

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
chmod 0644 secrets/*
echo "secrets written to $(pwd)/secrets; the admin token is in secrets/admin.token" >&2
