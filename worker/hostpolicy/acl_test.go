package hostpolicy

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/orderly-run/orderly/internal/order"
)

// The tags and permission bits of a POSIX ACL entry, as the kernel's
// include/uapi/linux/posix_acl.h and posix_acl_xattr.h define them.
const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
	aclNoID     = 0xffffffff
)

type aclEntry struct {
	tag, perm uint16
	id        uint32
}

// setACL writes path's access ACL in the kernel's xattr format (version 2,
// then tag, perm and id per entry, little-endian, sorted by tag), as
// setfacl does, so the test needs no acl package.
func setACL(t *testing.T, path string, entries ...aclEntry) {
	t.Helper()
	buf := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range entries {
		buf = binary.LittleEndian.AppendUint16(buf, e.tag)
		buf = binary.LittleEndian.AppendUint16(buf, e.perm)
		buf = binary.LittleEndian.AppendUint32(buf, e.id)
	}
	if err := syscall.Setxattr(path, "system.posix_acl_access", buf, 0); err != nil {
		if errors.Is(err, syscall.EOPNOTSUPP) {
			t.Fatalf("the filesystem of %s has no POSIX ACLs: %v", path, err)
		}
		t.Fatalf("set the ACL of %s: %v", path, err)
	}
	got := make([]byte, 256)
	n, err := syscall.Getxattr(path, "system.posix_acl_access", got)
	if err != nil || string(got[:n]) != string(buf) {
		t.Fatalf("the ACL of %s reads back as %x (%v), want %x", path, got[:max(n, 0)], err, buf)
	}
}

// nobodyCanWrite reports whether uid/gid 65534 can create a file in dir,
// or append to file when file is set: the kernel's answer, not ours.
func nobodyCanWrite(t *testing.T, dir, file string) bool {
	t.Helper()
	script := `: > "$1/probe"`
	target := dir
	if file != "" {
		script, target = `: >> "$1"`, file
	}
	cmd := exec.Command("/bin/sh", "-c", script, "sh", target)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run the probe as nobody: %v", err)
	}
	os.Remove(filepath.Join(dir, "probe"))
	return err == nil
}

// TestACLWriteIsRefused: a command_path directory or file whose POSIX ACL
// lets another user write it is refused, and one whose ACL names another
// user with rwx but whose mask takes the write away is not. The mode check
// needs no ACL reader for this: with an extended ACL the group bits of the
// mode are the mask, and every named entry and the owning group are
// limited by it, so any write the ACL grants to someone other than the
// owner shows as group write in the mode. The test asks the kernel, by
// writing as nobody, and compares.
func TestACLWriteIsRefused(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("setting ACLs on root's files and writing as nobody needs root, and CI=true runs as root")
		}
		t.Skip("needs root to set ACLs on root's files and to write as nobody")
	}
	f := newFixture(t)
	// nobody must be able to reach the directories to try writing:
	// t.TempDir makes its two levels 0700.
	chmod(t, filepath.Dir(f.root), 0o711)
	chmod(t, f.root, 0o755)
	base := []aclEntry{{aclUserObj, 7, aclNoID}}
	end := func(group, mask uint16) []aclEntry {
		return []aclEntry{{aclGroupObj, group, aclNoID}, {aclMask, mask, aclNoID}, {aclOther, 5, aclNoID}}
	}
	named := func(tag uint16, perm uint16) aclEntry { return aclEntry{tag, perm, 65534} }
	cat := func(parts ...[]aclEntry) []aclEntry {
		var out []aclEntry
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	for _, tt := range []struct {
		name   string
		onFile bool
		acl    []aclEntry
	}{
		// setfacl -m u:nobody:rwx: the mask becomes rwx.
		{"user-rwx-mask-rwx", false, cat(base, []aclEntry{named(aclUser, 7)}, end(5, 7))},
		// setfacl -n -m u:nobody:rwx,m::r-x: nobody's write is masked.
		{"user-rwx-mask-rx", false, cat(base, []aclEntry{named(aclUser, 7)}, end(5, 5))},
		{"group-rwx-mask-rwx", false, cat(base, end(5, 7)[:1], []aclEntry{named(aclGroup, 7)}, end(5, 7)[1:])},
		{"group-rwx-mask-rx", false, cat(base, end(5, 5)[:1], []aclEntry{named(aclGroup, 7)}, end(5, 5)[1:])},
		{"file-user-rw-mask-rw", true, cat(base, []aclEntry{named(aclUser, 6)}, end(5, 7))},
		{"file-user-rw-mask-rx", true, cat(base, []aclEntry{named(aclUser, 6)}, end(5, 5))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := f.path("acl/" + tt.name)
			tool := filepath.Join(dir, "acltool")
			f.file(t, "acl/"+tt.name+"/acltool", 0o755)
			target := dir
			if tt.onFile {
				target = tool
			}
			setACL(t, target, tt.acl...)
			cfg := f.cfg()
			cfg.CommandPath = append([]string{dir}, cfg.CommandPath...)
			p := newPolicy(t, cfg)
			_, err := p.Prepare(&order.Order{Command: "acltool"})
			probeFile := ""
			if tt.onFile {
				probeFile = tool
			}
			writable := nobodyCanWrite(t, dir, probeFile)
			if writable {
				assertCode(t, err, order.CodeForbidden, "not trusted on this host", "writable by its group")
			} else {
				assertCode(t, err, "")
			}
			t.Logf("nobody can write: %v; policy: %v", writable, err)
		})
	}
}
