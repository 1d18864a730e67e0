#!/bin/sh
# ensure-pgbouncer.sh: the tests of workers behind a transaction pooler
# (docs/scaling.md) run a real pgbouncer in front of their PostgreSQL, as
# a process of their own (never the system's service). Use the one on
# PATH, in /usr/sbin (Debian's) or bin/pgbouncer; otherwise, as root with
# apt-get, install Debian's pgbouncer package without letting it start or
# enable its service: a policy-rc.d that refuses starts while it installs
# (as Debian's container images have), then the unit disabled again.
set -eu
cd "$(dirname "$0")/.."
if command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || [ -x bin/pgbouncer ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "pgbouncer not found: installing the Debian pgbouncer package (its service neither started nor enabled)" >&2
	policy=
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		policy=/usr/sbin/policy-rc.d
		trap 'rm -f "$policy"' EXIT
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 0755 "$policy"
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq pgbouncer >/dev/null
	# Disabled on disk (systemctl needs no running systemd for that),
	# and in the SysV links with it, so that no boot starts it either.
	if command -v systemctl >/dev/null 2>&1; then
		systemctl disable pgbouncer.service >/dev/null 2>&1 || true
	elif command -v update-rc.d >/dev/null 2>&1; then
		update-rc.d pgbouncer disable >/dev/null 2>&1 || true
	fi
	exit 0
fi
echo "pgbouncer not found: install it (Debian/Ubuntu: apt-get install pgbouncer) for the tests of workers behind a pooler" >&2
# Only CI must have it: there the tests fail without it; elsewhere they skip.
[ "${CI:-}" != true ] || exit 1
