#!/bin/sh
# own-cgroup.sh CMD [ARG…] runs CMD in a cgroup of its own when it would
# run in the root of the cgroup2 hierarchy, as root, on a machine systemd
# does not run: the tests' workers (worker.cgroup: auto) put each order in
# a cgroup below their own, and never below the root cgroup, whose
# children no one process owns (worker/executor/cgroup_parent.go). A
# machine booted without a service manager starts its shells there; a
# systemd unit or a container already has a cgroup of its own, and then
# nothing changes. The cgroup (orderly-make-<pid>, on the cgroup2 mount)
# is left empty when CMD ends; a later run removes it once that pid is
# gone, never another run's that is going on (it may have made its
# cgroup and not yet moved into it). Where no cgroup can be made (a
# container's read-only cgroupfs), CMD runs where it is: the tests that
# need one say so.
set -eu
if [ "$(id -u)" = 0 ] && [ ! -d /run/systemd/system ]; then
	own=$(sed -n 's/^0:://p' /proc/self/cgroup)
	mount=$(awk '/ - cgroup2 / && $4 == "/" { print $5; exit }' /proc/self/mountinfo)
	if [ "$own" = / ] && [ -n "$mount" ]; then
		for old in "$mount"/orderly-make-*; do
			[ -d "$old" ] && ! kill -0 "${old##*-}" 2>/dev/null || continue
			# With the cgroups the run's workers left in it, deepest first.
			find "$old" -depth -type d -exec rmdir {} + 2>/dev/null || true
		done
		dir="$mount/orderly-make-$$"
		if ! { mkdir -p "$dir" && echo $$ >"$dir/cgroup.procs"; } 2>/dev/null; then
			rmdir "$dir" 2>/dev/null || true
			echo "own-cgroup.sh: cannot make a cgroup of its own under $mount (read-only?): ${1:-the command} runs in the root cgroup, where worker.cgroup auto refuses to contain orders" >&2
		fi
	fi
fi
exec "$@"
