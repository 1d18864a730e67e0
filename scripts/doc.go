// Package scripts holds no code: its tests run the shell scripts that
// make runs (own-cgroup.sh), on the machine's real cgroups, in a private
// mount namespace where they need one.
package scripts
