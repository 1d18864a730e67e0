package executor

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// A start that fails for want of processes or descriptors says which
// limit was reached: "resource temporarily unavailable" alone leaves an
// operator to guess among a pids cgroup (systemd's TasksMax=), the order
// user's RLIMIT_NPROC and the kernel's, and "too many open files" between
// the worker's RLIMIT_NOFILE and the system's (docs/reliability.md, "The
// host out of processes, descriptors or memory").

// outOfDescriptors reports whether err is the worker or the system out
// of file descriptors: a condition that passes when descriptors are
// closed (a live follower of serve's API that leaves), unlike a process
// limit held by a fork bomb.
func outOfDescriptors(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// explainStart adds to err, an order's start error, the limit it ran
// into when it is one of processes or descriptors, as found right after
// the failure. cred is the order's user (nil: the worker's own), parent
// the order cgroup's parent ("" without one).
func explainStart(err error, cred *syscall.Credential, parent string) error {
	var why string
	switch {
	case errors.Is(err, syscall.EAGAIN):
		why = processLimitReached(cred, parent)
	case errors.Is(err, syscall.EMFILE):
		why = "the worker's open file limit"
		var l unix.Rlimit
		if unix.Getrlimit(unix.RLIMIT_NOFILE, &l) == nil {
			why += fmt.Sprintf(" (RLIMIT_NOFILE %d)", l.Cur)
		}
		why += " reached"
	case errors.Is(err, syscall.ENFILE):
		why = "the system's open file limit"
		if max := readFirstField("/proc/sys/fs/file-max"); max != "" {
			why += " (fs.file-max " + max + ")"
		}
		why += " reached"
	case errors.Is(err, syscall.ENOMEM):
		why = "out of memory for a new process"
	}
	if why == "" {
		return err
	}
	return fmt.Errorf("%w (%s)", err, why)
}

// processLimitReached names the limit an EAGAIN of fork or exec ran into:
// the order user's RLIMIT_NPROC (checked by the kernel at fork for a
// worker that is not root, and at exec after the switch to another user),
// a pids cgroup at its pids.max on the way up from where the process was
// made, or the kernel's own bounds. Limits can be freed between the
// failure and this look: then it says none was seen reached.
func processLimitReached(cred *syscall.Credential, parent string) string {
	uid := os.Getuid()
	if cred != nil {
		uid = int(cred.Uid)
	}
	if uid != 0 {
		var l unix.Rlimit
		if unix.Getrlimit(unix.RLIMIT_NPROC, &l) == nil && l.Cur != unix.RLIM_INFINITY {
			if n := tasksOf(uid); uint64(n) >= l.Cur {
				return fmt.Sprintf("user %s at its process limit: RLIMIT_NPROC %d, %d of its tasks running", userName(uid), l.Cur, n)
			}
		}
	}
	for _, dir := range pidsCgroups(parent) {
		max, cur := readFirstField(filepath.Join(dir, "pids.max")), readFirstField(filepath.Join(dir, "pids.current"))
		m, err1 := strconv.Atoi(max)
		c, err2 := strconv.Atoi(cur)
		if err1 == nil && err2 == nil && c >= m {
			return fmt.Sprintf("the pids limit of cgroup %s reached: pids.max %d, %d tasks", dir, m, c)
		}
	}
	if f := strings.Fields(readFirstLine("/proc/loadavg")); len(f) >= 4 {
		if _, total, ok := strings.Cut(f[3], "/"); ok {
			n, _ := strconv.Atoi(total)
			for _, k := range []string{"threads-max", "pid_max"} {
				if m, err := strconv.Atoi(readFirstField("/proc/sys/kernel/" + k)); err == nil && n >= m-m/64 {
					return fmt.Sprintf("the kernel's %s reached: %d, %d tasks", k, m, n)
				}
			}
		}
	}
	return "out of processes: no pids cgroup, RLIMIT_NPROC nor kernel limit seen reached when the worker looked"
}

// pidsCgroups lists the pids cgroups a process the worker makes is
// counted in, deepest first: the order cgroup's parent and its ancestors
// when the pids controller is there (cgroup v2), else the worker's own
// pids cgroup and its ancestors, v2 or v1, below their mount's root
// (which has no pids.max).
func pidsCgroups(parent string) []string {
	var dirs []string
	up := func(dir, root string) {
		for ; dir != root && strings.HasPrefix(dir, root); dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "pids.max")); err == nil {
				dirs = append(dirs, dir)
			}
		}
	}
	self, err1 := os.ReadFile("/proc/self/cgroup")
	mounts, err2 := os.ReadFile("/proc/self/mountinfo")
	if err1 != nil || err2 != nil {
		return nil
	}
	if parent != "" {
		if root := mountOf(parent, mounts); root != "" {
			up(parent, root)
		}
		if len(dirs) > 0 {
			return dirs
		}
	}
	if dir, root := controllerDir("pids", self, mounts); dir != "" {
		up(dir, root)
	}
	return dirs
}

// controllerDir is the directory of the worker's own cgroup in the
// hierarchy of controller (cgroup v1's "N:pids:/path", or v2's "0::/path"
// where no v1 hierarchy has it), and that hierarchy's mount point.
func controllerDir(controller string, selfCgroup, mountinfo []byte) (dir, mountpoint string) {
	v1 := map[string]string{}
	var v2 string
	sc := bufio.NewScanner(bytes.NewReader(selfCgroup))
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), ":", 3)
		if len(f) != 3 {
			continue
		}
		if f[0] == "0" && f[1] == "" {
			v2 = f[2]
			continue
		}
		for _, c := range strings.Split(f[1], ",") {
			v1[c] = f[2]
		}
	}
	sc = bufio.NewScanner(bytes.NewReader(mountinfo))
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		f, p := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(p) < 3 {
			continue
		}
		root, mp := unescapeMountinfo(f[3]), unescapeMountinfo(f[4])
		var own string
		switch {
		case p[0] == "cgroup" && v1[controller] != "" && hasOption(p[2], controller):
			own = v1[controller]
		case p[0] == "cgroup2" && v1[controller] == "" && v2 != "":
			own = v2
		default:
			continue
		}
		rel, ok := strings.CutPrefix(own, root)
		if !ok {
			continue
		}
		return filepath.Join(mp, rel), mp
	}
	return "", ""
}

// mountOf is the mount point of the cgroup filesystem dir is on.
func mountOf(dir string, mountinfo []byte) string {
	best := ""
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		f := strings.Fields(pre)
		if !ok || len(f) < 5 || !strings.HasPrefix(post, "cgroup") {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if (dir == mp || strings.HasPrefix(dir, mp+"/")) && len(mp) > len(best) {
			best = mp
		}
	}
	return best
}

// hasOption reports whether the comma-separated options hold opt.
func hasOption(options, opt string) bool {
	for _, o := range strings.Split(options, ",") {
		if o == opt {
			return true
		}
	}
	return false
}

// tasksOf counts the tasks (threads: RLIMIT_NPROC counts them) whose real
// uid is uid.
func tasksOf(uid int) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	want := strconv.Itoa(uid)
	n := 0
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		var real, threads string
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "Uid:"); ok {
				if f := strings.Fields(v); len(f) > 0 {
					real = f[0]
				}
			} else if v, ok := strings.CutPrefix(line, "Threads:"); ok {
				threads = strings.TrimSpace(v)
			}
		}
		if real == want {
			t, _ := strconv.Atoi(threads)
			n += max(t, 1)
		}
	}
	return n
}

// userName is "name (uid N)", or "uid N" for a uid with no name.
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return fmt.Sprintf("%s (uid %d)", u.Username, uid)
	}
	return fmt.Sprintf("uid %d", uid)
}

// readFirstLine is the first line of a small file, "" when unreadable.
func readFirstLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return line
}

// readFirstField is the first field of a small file's first line.
func readFirstField(path string) string {
	if f := strings.Fields(readFirstLine(path)); len(f) > 0 {
		return f[0]
	}
	return ""
}
