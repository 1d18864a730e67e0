package executor

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// hostFiles are the host-wide /proc files the look at an order's session
// reads (group.go): the last pid handed out, pid_max, the fork count of
// /proc/stat and the tasks of /proc/loadavg. Each is opened once, by the
// first read, and read again from its start with pread, which has the
// kernel make its content afresh (a sysctl at offset 0, a seq_file read
// from offset 0): one system call a read where open, read and close were
// three, and no path walk. They are read on every order whose session
// forked or whose leader waits for a processor, several times an order
// when other workers of the machine fork meanwhile: with eight hosts on
// one machine, 16 reads an order (docs/benchmarks.md, "Thirty-eighth
// round: eight hosts' CPU per order, accounted").
type hostFiles struct {
	lastPid, pidMax, stat, loadavg heldFile
	// opening opens all four at the first read of any: an Executor's
	// descriptors are then the same from its first order on, whichever
	// files its orders came to read.
	opening sync.Once
}

// files are h's files.
func (h *hostFiles) files() []*heldFile {
	return []*heldFile{&h.lastPid, &h.pidMax, &h.stat, &h.loadavg}
}

// open opens every file not open yet; one that fails is opened by its
// next read.
func (h *hostFiles) open() {
	h.opening.Do(func() {
		for _, f := range h.files() {
			if f.lock() == nil {
				f.mu.Unlock()
			}
		}
	})
}

// newHostFiles returns the files, none open yet.
func newHostFiles() *hostFiles {
	return &hostFiles{
		lastPid: heldFile{path: "/proc/sys/kernel/ns_last_pid", fd: -1},
		pidMax:  heldFile{path: "/proc/sys/kernel/pid_max", fd: -1},
		stat:    heldFile{path: "/proc/stat", fd: -1},
		loadavg: heldFile{path: "/proc/loadavg", fd: -1},
	}
}

// closeWhenUnreachable closes h's descriptors once owner is garbage: an
// Executor lives as long as its worker, but tests make many.
func (h *hostFiles) closeWhenUnreachable(owner *Executor) {
	runtime.AddCleanup(owner, func(h *hostFiles) {
		for _, f := range h.files() {
			f.mu.Lock()
			if f.fd >= 0 {
				_ = unix.Close(f.fd)
				f.fd = -1
			}
			f.mu.Unlock()
		}
	}, h)
}

// heldFile is one /proc file kept open.
type heldFile struct {
	path string
	// mu is held for a whole read, so that a file read in pieces
	// (/proc/stat on a host with many CPUs and interrupts) is read from
	// one making of it: concurrent readers at other offsets would have
	// the kernel make it again between the pieces.
	mu sync.Mutex
	fd int // -1: not open (yet, or its open failed and is tried again)
}

// lock takes the file for a read, opening it if it is not open; on an
// error the file is not taken.
func (f *heldFile) lock() error {
	f.mu.Lock()
	if f.fd >= 0 {
		return nil
	}
	fd, err := unix.Open(f.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		f.mu.Unlock()
		return &os.PathError{Op: "open", Path: f.path, Err: err}
	}
	if procFileOpened != nil {
		procFileOpened(f.path)
	}
	f.fd = fd
	return nil
}

// readAt reads the file at off into p; f must be locked.
func (f *heldFile) readAt(p []byte, off int64) (int, error) {
	for {
		n, err := unix.Pread(f.fd, p, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, &os.PathError{Op: "read", Path: f.path, Err: err}
		}
		return n, nil
	}
}

// int reads the file as one number.
func (f *heldFile) int() (int, error) {
	if err := f.lock(); err != nil {
		return 0, err
	}
	var buf [32]byte
	n, err := f.readAt(buf[:], 0)
	f.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(string(bytes.TrimSpace(buf[:n])))
}

// lastPidNow is the last pid handed out in the worker's pid namespace.
func (h *hostFiles) lastPidNow() (int, error) {
	h.open()
	return h.lastPid.int()
}

// pidMaxNow is the pid namespace's pid_max.
func (h *hostFiles) pidMaxNow() (int, error) {
	h.open()
	return h.pidMax.int()
}

// forkCount returns the number of processes and threads created since boot
// (the "processes" line of /proc/stat): an upper bound on the pids handed
// out in any pid namespace. It reads the file in pieces into one small
// buffer: the line comes after a line per CPU and one per interrupt, which
// make the file large on large hosts.
//
// It is on the path of every order whose session may have forked (the
// session check's reading, pidRangeLast), so it reads with plain system
// calls, as readStat does: os.Open added two fcntl and an epoll_ctl each
// way, and a proc file, which the runtime's poller takes, woke the
// poller's thread as it was added (docs/benchmarks.md, "The worker's
// per-order path, counted (hC10)").
func (h *hostFiles) forkCount() (uint64, error) {
	h.open()
	f := &h.stat
	if err := f.lock(); err != nil {
		return 0, err
	}
	defer f.mu.Unlock()
	const key = "\nprocesses "
	var buf [4096]byte
	n := 0 // bytes in buf
	var off int64
	for {
		m, err := f.readAt(buf[n:], off)
		off += int64(m)
		n += m
		if i := bytes.Index(buf[:n], []byte(key)); i >= 0 {
			v := buf[i+len(key) : n]
			if j := bytes.IndexByte(v, '\n'); j >= 0 {
				return strconv.ParseUint(string(v[:j]), 10, 64)
			}
			if i > 0 { // the number goes on past the buffer: keep the line only
				n = copy(buf[:], buf[i:n])
			}
		} else if n > len(key) {
			// Keep what could be the start of the line.
			n = copy(buf[:], buf[n-len(key):n])
		}
		if err != nil || m == 0 {
			return 0, fmt.Errorf("no processes line in /proc/stat")
		}
	}
}

// taskCount returns the number of tasks (processes and threads) on the
// host, the total of /proc/loadavg's running/total field. Read into a
// buffer on the stack, as forkCount.
func (h *hostFiles) taskCount() (int, error) {
	h.open()
	f := &h.loadavg
	if err := f.lock(); err != nil {
		return 0, err
	}
	var buf [128]byte
	n := 0
	for n < len(buf) {
		m, err := f.readAt(buf[n:], int64(n))
		if err != nil {
			f.mu.Unlock()
			return 0, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	f.mu.Unlock()
	b := buf[:n]
	// The fourth field, without bytes.Fields' slice of them.
	rest := b
	for range 3 {
		_, rest, _ = bytes.Cut(bytes.TrimLeft(rest, " "), []byte(" "))
	}
	field, _, _ := bytes.Cut(bytes.TrimLeft(rest, " "), []byte(" "))
	if _, total, ok := bytes.Cut(field, []byte("/")); ok {
		if n, err := strconv.Atoi(string(bytes.TrimSpace(total))); err == nil {
			return n, nil
		}
	}
	return 0, fmt.Errorf("parse /proc/loadavg: %q", string(b)) // a copy: buf stays on the stack
}

// sessionAlone reports whether no pid was handed out in the worker's pid
// namespace since the leader sid: then the leader is the only process of
// its session. Every process, in this pid namespace or one nested in it,
// takes a pid here from the same cyclic allocator, and ns_last_pid is the
// last one it handed out; it cannot be sid again while the leader is
// unreaped. (A privileged process can set the next pid, writing
// ns_last_pid or with clone3's set_tid, for checkpoint/restore; like
// setsid, that is a deliberate escape, which the session does not hold.)
// It must be called once the leader is dead or has a SIGKILL pending, so
// that no fork of the leader's can come after.
func (h *hostFiles) sessionAlone(sid int) bool {
	last, err := h.lastPidNow()
	return err == nil && last == sid
}
