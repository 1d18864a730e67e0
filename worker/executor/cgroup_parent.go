package executor

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The worker.cgroup settings other than a path.
const (
	// CgroupAuto runs orders in cgroups where the worker can make them
	// (DetectCgroupParent), and in process groups elsewhere.
	CgroupAuto = "auto"
	// CgroupOn is CgroupAuto that refuses to start without a cgroup.
	CgroupOn = "on"
	// CgroupOff runs orders in process groups only ("" too).
	CgroupOff = "off"
)

// ResolveCgroupParent turns the worker.cgroup setting into the parent
// cgroup the executor creates order cgroups in (Request.CgroupParent),
// and a note that says why, for the worker's start-up log:
//
//   - "" or "off": orders are contained by their process group only.
//   - "auto": the cgroup DetectCgroupParent finds; when there is none,
//     parent is "" and note says why, so the worker can log that it falls
//     back to process groups.
//   - "on": as auto, but no cgroup is an error.
//   - anything else is the path of a cgroup v2 directory, checked by
//     CheckCgroupParent; a path that does not work is an error, since the
//     operator asked for it explicitly.
func ResolveCgroupParent(setting string) (parent, note string, err error) {
	switch setting {
	case "", CgroupOff:
		return "", "worker.cgroup is off", nil
	case CgroupAuto, CgroupOn:
		parent, why, err := DetectCgroupParent()
		if err != nil && setting == CgroupOn {
			return "", "", fmt.Errorf("on: %w", err)
		}
		if err != nil {
			return "", err.Error(), nil
		}
		return parent, why, nil
	default:
		if err := CheckCgroupParent(setting); err != nil {
			return "", "", err
		}
		return filepath.Clean(setting), "configured", nil
	}
}

// CheckCgroupParent checks that path is a cgroup v2 directory the worker
// can create order cgroups in, by creating and removing a probe child: that
// proves the filesystem, the permission, a child that can hold processes
// (a domain cgroup, not a threaded one) and, through the child's
// cgroup.kill file, a kernel of at least 5.14, or through its
// cgroup.freeze file one of at least 5.2 (ending an order then freezes its
// cgroup and kills each process: orderCgroup.kill).
func CheckCgroupParent(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("cgroup parent %q is not an absolute path", path)
	}
	var fsStat unix.Statfs_t
	if err := unix.Statfs(path, &fsStat); err != nil {
		return fmt.Errorf("cgroup parent %s: %w", path, err)
	}
	if fsStat.Type != unix.CGROUP2_SUPER_MAGIC {
		return fmt.Errorf("cgroup parent %s is not on a cgroup v2 (unified) filesystem", path)
	}
	probe := filepath.Join(path, "orderly-probe-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(probe, 0o755); err != nil {
		return fmt.Errorf("cgroup parent %s: cannot create a child cgroup: %w", path, err)
	}
	_, killErr := os.Stat(filepath.Join(probe, "cgroup.kill"))
	_, freezeErr := os.Stat(filepath.Join(probe, "cgroup.freeze"))
	typ, typeErr := os.ReadFile(filepath.Join(probe, "cgroup.type"))
	if err := unix.Rmdir(probe); err != nil {
		return fmt.Errorf("cgroup parent %s: remove probe cgroup: %w", path, err)
	}
	if killErr != nil && freezeErr != nil {
		return fmt.Errorf("cgroup parent %s: no cgroup.kill nor cgroup.freeze (Linux 5.2 or later is needed): %w", path, killErr)
	}
	if typeErr == nil && strings.TrimSpace(string(typ)) != "domain" {
		return fmt.Errorf("cgroup parent %s: its children are %s cgroups, which cannot hold an order's process", path, strings.TrimSpace(string(typ)))
	}
	return nil
}

// DetectCgroupParent finds where the worker may make its orders' cgroups,
// and says why there:
//
//   - The cgroup it runs in (/proc/self/cgroup, "0::<path>", on the
//     cgroup2 mount), when systemd marked it as delegated (Delegate=yes
//     sets the trusted.delegate or user.delegate extended attribute), or
//     else that cgroup's parent when the parent is marked
//     (DelegateSubgroup=, which puts the main process in a child of the
//     unit's cgroup).
//   - Without such a mark, the cgroup it runs in when systemd does not run
//     the machine (no /run/systemd/system): in a container (a cgroup
//     namespace's root included) or on a host with another init, nothing
//     else makes or removes cgroups below the worker's own.
//
// Writable is not enough under systemd: root can write any cgroup, but
// children made in a cgroup systemd manages without delegation confuse it
// (it may remove them, or fail to enable controllers there). The root
// cgroup is never chosen. The worker stays where it is: its cgroup has no
// controllers enabled for children (it could not hold the worker if it
// had), and the order cgroups get none, so the kernel's
// no-internal-processes rule allows them beside it.
func DetectCgroupParent() (parent, why string, err error) {
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", "", fmt.Errorf("detect cgroup: %w", err)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", "", fmt.Errorf("detect cgroup: %w", err)
	}
	own, err := ownCgroupDir(self, mounts)
	if err != nil {
		return "", "", err
	}
	_, err = os.Stat("/run/systemd/system")
	parent, why, err = chooseCgroupParent(own, delegateMarked, err == nil)
	if err != nil {
		return "", "", err
	}
	if err := CheckCgroupParent(parent); err != nil {
		return "", "", err
	}
	return parent, why, nil
}

// chooseCgroupParent is DetectCgroupParent's choice for the worker's own
// cgroup directory own: the delegated one (marked says) or, when systemd
// does not run the machine, own itself.
func chooseCgroupParent(own string, marked func(string) bool, systemd bool) (parent, why string, err error) {
	parent, err = delegatedDir(own, marked)
	if err == nil {
		return parent, "systemd delegated it", nil
	}
	if systemd {
		return "", "", err
	}
	if isCgroupRoot(own) {
		return "", "", fmt.Errorf("the worker runs in the root cgroup %s, whose children it does not own", own)
	}
	return own, "the worker's own cgroup, and no systemd runs this machine", nil
}

// delegatedDir picks own or its parent, whichever systemd marked as
// delegated (marked says), never a cgroup2 mount's root.
func delegatedDir(own string, marked func(string) bool) (string, error) {
	for _, dir := range []string{own, filepath.Dir(own)} {
		if isCgroupRoot(dir) {
			break
		}
		if marked(dir) {
			return dir, nil
		}
	}
	return "", fmt.Errorf("the worker's cgroup %s is not delegated to it (no trusted.delegate or user.delegate attribute): run it under systemd with Delegate=yes, or set worker.cgroup to a cgroup path", own)
}

// isCgroupRoot reports whether dir is the root of a cgroup2 hierarchy, or
// no cgroup at all: the directories without a cgroup.events file.
func isCgroupRoot(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "cgroup.events"))
	return err != nil
}

// delegateMarked reports whether systemd marked the cgroup directory as
// delegated to its unit.
func delegateMarked(dir string) bool {
	buf := make([]byte, 8)
	for _, attr := range []string{"trusted.delegate", "user.delegate"} {
		if n, err := unix.Getxattr(dir, attr, buf); err == nil && n > 0 && buf[0] == '1' {
			return true
		}
	}
	return false
}

// ownCgroupDir maps the unified-hierarchy line of /proc/self/cgroup
// ("0::/system.slice/orderly-worker.service") to a directory on a cgroup2
// mount from /proc/self/mountinfo, whose root field may itself be a
// sub-path (a container's bind mount of its own subtree).
func ownCgroupDir(selfCgroup, mountinfo []byte) (string, error) {
	var own string
	found := false
	sc := bufio.NewScanner(bytes.NewReader(selfCgroup))
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			own, found = p, true
			break
		}
	}
	if !found {
		return "", errors.New("the worker is in no cgroup v2 (no 0:: line in /proc/self/cgroup)")
	}
	sc = bufio.NewScanner(bytes.NewReader(mountinfo))
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional…] - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		f := strings.Fields(pre)
		if len(f) < 5 {
			continue
		}
		root, mountpoint := unescapeMountinfo(f[3]), unescapeMountinfo(f[4])
		rel, ok := strings.CutPrefix(own, root)
		if !ok || (root != "/" && rel != "" && !strings.HasPrefix(rel, "/")) {
			continue
		}
		return filepath.Join(mountpoint, rel), nil
	}
	return "", fmt.Errorf("no cgroup2 mount shows the worker's cgroup %s", own)
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
