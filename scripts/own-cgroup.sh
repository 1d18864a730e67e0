#!/bin/sh
# own-cgroup.sh CMD [ARG…] runs CMD in a cgroup of its own when it would
# run in the root of the cgroup2 hierarchy, as root, on a machine systemd
# does not run: the tests' workers (worker.cgroup: auto) put each order in
# a cgroup below their own, and never below the root cgroup, whose
# children no one process owns (worker/executor/cgroup_parent.go). A
# machine booted without a service manager starts its shells there; a
# systemd unit or a container already has a cgroup of its own, and then
# nothing changes. The cgroup (orderly-make-<pid>, on the cgroup2 mount)
# is left empty when CMD ends; the next run removes the empty ones.
set -eu
if [ "$(id -u)" = 0 ] && [ ! -d /run/systemd/system ]; then
	own=$(sed -n 's/^0:://p' /proc/self/cgroup)
	mount=$(awk '/ - cgroup2 / && $4 == "/" { print $5; exit }' /proc/self/mountinfo)
	if [ "$own" = / ] && [ -n "$mount" ]; then
		for old in "$mount"/orderly-make-*; do
			[ -d "$old" ] && rmdir "$old" 2>/dev/null || true
		done
		dir="$mount/orderly-make-$$"
		mkdir "$dir"
		echo $$ > "$dir/cgroup.procs"
	fi
fi
exec "$@"
