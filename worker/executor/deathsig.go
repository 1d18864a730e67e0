package executor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// atSecure is the auxiliary vector's AT_SECURE: 1 for an exec that
// raised the process's privileges.
const atSecure = 23

// diesWithWorker reports whether the leader pid still has the
// parent-death signal Run gave it (Pdeathsig), as far as /proc tells:
// the kernel clears it at an exec that raised the leader's privileges (a
// set-user-ID, set-group-ID or file-capability executable: AT_SECURE)
// and at any change of its effective or file-system user or group ID (a
// command that drops root with setuid, as setpriv or runuser do). Such a
// leader lives on when the worker dies, and its record is all a
// successor finds it by, so the alone wait (exitedBeforeRecord) is not
// for it: a worker killed within that wait left it running, unrecorded,
// after its order was ended interrupted. cred is the credential Run
// started it with, nil for the worker's own. Any doubt answers false.
func diesWithWorker(pid int, cred *syscall.Credential) bool {
	uid, gid := uint64(os.Geteuid()), uint64(os.Getegid())
	if cred != nil {
		uid, gid = uint64(cred.Uid), uint64(cred.Gid)
	}
	dir := "/proc/" + strconv.Itoa(pid)
	var buf [2048]byte
	status, err := readProcFile(dir+"/status", buf[:])
	if err != nil || !idsAre(status, "Uid:", uid) || !idsAre(status, "Gid:", gid) {
		return false
	}
	// Read as the worker may read it: a leader made not dumpable by a
	// secure exec refuses a worker that is not root.
	auxv, err := readProcFile(dir+"/auxv", buf[:])
	if errors.Is(err, unix.ESRCH) || err == nil && len(auxv) == 0 {
		// No memory left to read it from: the leader is exiting, as
		// at the end of a wait that was worth it.
		return true
	}
	if err != nil {
		return false
	}
	for ; len(auxv) >= 16; auxv = auxv[16:] {
		if binary.NativeEndian.Uint64(auxv) == atSecure {
			return binary.NativeEndian.Uint64(auxv[8:]) == 0
		}
	}
	return false
}

// idsAre reports whether status's line key ("Uid:": real, effective,
// saved set, file system) gives id as the effective and the file system
// ID, the two whose change clears the parent-death signal. It allocates
// nothing: it runs at each look of the alone wait.
func idsAre(status []byte, key string, id uint64) bool {
	i := bytes.Index(status, []byte("\n"+key))
	if i < 0 {
		return false
	}
	line := status[i+1+len(key):]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	var f [4][]byte
	n := 0
	for w := range bytes.FieldsFuncSeq(line, func(r rune) bool { return r == ' ' || r == '\t' }) {
		if n == len(f) {
			return false
		}
		f[n], n = w, n+1
	}
	return n == len(f) && decimalIs(f[1], id) && decimalIs(f[3], id)
}

// decimalIs reports whether b is id written in decimal.
func decimalIs(b []byte, id uint64) bool {
	var buf [20]byte
	return bytes.Equal(b, strconv.AppendUint(buf[:0], id, 10))
}
