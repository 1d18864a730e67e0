package pgembed

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// owner is the OS account the PostgreSQL programs run as. It is nil when
// orderly is not root and the programs simply run as the current user.
type owner struct {
	name   string
	uid    uint32
	gid    uint32
	groups []uint32
}

// lookupOwner returns the postgres account when running as root, because
// initdb and postgres refuse to run as root, and nil otherwise.
func lookupOwner() (*owner, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, so PostgreSQL must run as the postgres user: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("postgres user uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("postgres user gid %q: %w", u.Gid, err)
	}
	o := &owner{name: u.Username, uid: uint32(uid), gid: uint32(gid)}
	ids, err := u.GroupIds()
	if err == nil {
		for _, id := range ids {
			if g, err := strconv.ParseUint(id, 10, 32); err == nil {
				o.groups = append(o.groups, uint32(g))
			}
		}
	}
	return o, nil
}

// credential is what exec.Cmd needs to run a program as o.
func (o *owner) credential() *syscall.Credential {
	if o == nil {
		return nil
	}
	return &syscall.Credential{Uid: o.uid, Gid: o.gid, Groups: o.groups}
}

// chown gives path to o; a no-op when not running as root.
func (o *owner) chown(path string) error {
	if o == nil {
		return nil
	}
	if err := os.Lchown(path, int(o.uid), int(o.gid)); err != nil {
		return fmt.Errorf("give %s to the %s user: %w", path, o.name, err)
	}
	return nil
}

// checkTraverse fails with an error naming the first directory on the way
// to dir (dir excluded, since Start owns it) that o cannot search, because
// otherwise initdb fails later with a far less helpful message.
func (o *owner) checkTraverse(dir string) error {
	if o == nil {
		return nil
	}
	var ancestors []string
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		ancestors = append(ancestors, p)
		if p == filepath.Dir(p) {
			break
		}
	}
	for i := len(ancestors) - 1; i >= 0; i-- {
		p := ancestors[i]
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("check access to %s: %w", p, err)
		}
		if !o.canSearch(fi) {
			return fmt.Errorf("%w: the %s user cannot reach %s because it cannot enter %s (mode %s): make it searchable (chmod o+x %s) or choose a data directory elsewhere",
				ErrUnreachable, o.name, dir, p, fi.Mode().Perm(), p)
		}
	}
	return nil
}

// canSearch applies the owner/group/other execute bit that the kernel would
// check for o.
func (o *owner) canSearch(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	perm := fi.Mode().Perm()
	switch {
	case st.Uid == o.uid:
		return perm&0o100 != 0
	case o.inGroup(st.Gid):
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}

func (o *owner) inGroup(gid uint32) bool {
	if gid == o.gid {
		return true
	}
	for _, g := range o.groups {
		if g == gid {
			return true
		}
	}
	return false
}
