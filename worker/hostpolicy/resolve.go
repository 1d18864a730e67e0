package hostpolicy

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/orderly-run/orderly/internal/order"
)

// command is a resolved command.
type command struct {
	// lexicalPath is the path as spelled: a command_path directory as
	// configured joined with the name, or the client's cleaned absolute
	// path. exec_root's symlink walk follows this spelling.
	lexicalPath string
	// resolvedPath is the entry in its canonical command_path directory:
	// the name rules match and the path sudo is given.
	resolvedPath string
	// realPath is the file itself, every symlink resolved: what the
	// executor runs and what exec_root must contain.
	realPath string
}

// resolve finds name through command_path only; no shell is involved.
//
// A bare name is looked up in each command_path directory in order, like
// PATH: the first regular executable file (or symlink to one) wins. A name
// containing '/' must be absolute, without "." or ".." elements, and name a
// direct entry of a command_path directory once both directories are
// resolved with EvalSymlinks, so /bin/ls is accepted where /bin links to
// /usr/bin and /usr/bin/../../tmp/x is not. The entry itself may be a
// symlink, as a PATH lookup allows: a command_path directory is as trusted
// as the links an administrator put in it (Debian's /usr/bin/java points
// into /usr/lib/jvm). exec_root, when set, is the stricter containment.
func (p *Policy) resolve(name string) (command, error) {
	if !utf8.ValidString(name) {
		return command{}, order.FieldError(order.CodeInvalid, "command", "command is not valid UTF-8")
	}
	if name == "." || name == ".." {
		return command{}, order.FieldError(order.CodeForbidden, "command", "command %q is a directory reference", name)
	}
	if percentEncoded(name) {
		return command{}, order.FieldError(order.CodeForbidden, "command",
			"command %q looks percent-encoded; send the command name decoded", name)
	}
	var c command
	var err error
	if strings.Contains(name, "/") {
		c, err = p.absolute(name)
	} else {
		c, err = p.lookup(name)
	}
	if err != nil {
		return command{}, err
	}
	if p.execRoot != "" {
		if err := p.contain(c); err != nil {
			return command{}, err
		}
	}
	return c, nil
}

// lookup finds a bare name in command_path.
func (p *Policy) lookup(name string) (command, error) {
	for _, dir := range p.commandPath {
		candidate := filepath.Join(dir, name)
		if fi, ok := executableFile(candidate); ok {
			return p.entry(dir, candidate, fi)
		}
	}
	return command{}, order.FieldError(order.CodeUnprocessable, "command",
		"command %q is not an executable file in this host's command_path%s", name, noShellHint(name))
}

// noShellHint says, for a command that holds a space ("uname -a",
// "ls | wc -l": a command line written as a shell reads it), that the
// command is one program and its arguments go in args. No shell splits
// it, so such a name is looked up whole and found nowhere.
func noShellHint(name string) string {
	f := strings.Fields(name)
	if len(f) < 2 {
		return ""
	}
	return fmt.Sprintf(": the command is one program, run without a shell; send %q as the command and each of its arguments as an element of args", f[0])
}

// absolute accepts a path naming a direct entry of a command_path directory.
func (p *Policy) absolute(name string) (command, error) {
	if !filepath.IsAbs(name) {
		return command{}, order.FieldError(order.CodeForbidden, "command",
			"command %q must be a bare name or an absolute path inside this host's command_path", name)
	}
	for _, el := range strings.Split(name, "/") {
		if el == "." || el == ".." {
			return command{}, order.FieldError(order.CodeForbidden, "command",
				"command %q must not contain . or .. path elements", name)
		}
	}
	clean := filepath.Clean(name)
	if dir, ok := p.commandPathDir(clean); ok {
		fi, ok := executableFile(clean)
		if !ok {
			return command{}, order.FieldError(order.CodeUnprocessable, "command",
				"command %q is not an executable file%s", name, noShellHint(name))
		}
		return p.entry(dir, clean, fi)
	}
	return command{}, order.FieldError(order.CodeForbidden, "command",
		"command %q is not inside this host's command_path", name)
}

// commandPathDir returns the command_path directory that the clean
// absolute path is a direct entry of, once both directories are resolved
// with EvalSymlinks.
func (p *Policy) commandPathDir(clean string) (string, bool) {
	realDir, err := filepath.EvalSymlinks(filepath.Dir(clean))
	if err != nil {
		return "", false
	}
	for _, dir := range p.commandPath {
		if rd, err := filepath.EvalSymlinks(dir); err == nil && rd == realDir {
			return dir, true
		}
	}
	return "", false
}

// entry describes the executable file at lexical, an entry of the
// command_path directory dir, which resolution found executable (fi, its
// file's). It refuses the file when someone other than root and the
// worker's own user could have put it there or changed it: the directory
// it is an entry of, the file, or the directory the file really lies in
// (for an entry that is a symlink) is theirs or writable by its group or
// by others, or a directory above either is (unless sticky): then they
// could rename the directory below away and put their own in its place,
// between this check and the exec. A bare name found there is not looked
// up further down the path: a planted file must not decide which binary
// runs, and neither must its absence.
func (p *Policy) entry(dir, lexical string, fi os.FileInfo) (command, error) {
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return command{}, order.FieldError(order.CodeUnprocessable, "command", "command_path directory %s is unavailable", dir)
	}
	realPath, err := filepath.EvalSymlinks(lexical)
	if err != nil {
		return command{}, order.FieldError(order.CodeUnprocessable, "command", "command %s is unavailable", lexical)
	}
	if why := p.untrustedFile(realDir, realPath, fi); why != "" {
		return command{}, order.FieldError(order.CodeForbidden, "command",
			"command %s is not trusted on this host: %s", lexical, why)
	}
	return command{
		lexicalPath:  lexical,
		resolvedPath: filepath.Join(realDir, filepath.Base(lexical)),
		realPath:     realPath,
	}, nil
}

// untrustedFile says why someone other than root and the worker's own
// user could change the file at realPath (fi, its information), an entry
// of the directory realDir or a link from one, or "": the file, either
// directory or a directory above them (unless sticky) is theirs or
// writable by its group or by others.
func (p *Policy) untrustedFile(realDir, realPath string, fi os.FileInfo) string {
	if why := p.untrusted(realPath, fi, false); why != "" {
		return why
	}
	return p.untrustedDirs(uniq(filepath.Dir(realPath), realDir))
}

// untrustedDirs says why someone other than root and the worker's own
// user could change one of dirs (real paths, no symlinks), or what one of
// their ancestors holds in its place, or "". Each directory is checked
// once: a stat per level, two more per order than before for /usr/bin
// (BenchmarkResolveTrust; a cache would need the same stat to tell that
// the path still names the directory it saw).
func (p *Policy) untrustedDirs(dirs []string) string {
	return untrustedUp(dirs, false, p.euid, "the worker's user")
}

// untrustedUp walks dirs and their ancestors up to the root, each level
// once, for the user euid (named user in the answer): a directory of dirs
// is held to the rule for a directory, the levels above it to the rule
// for an ancestor (sticky is enough), or all of them to the latter when
// onlyAncestors is set.
func untrustedUp(dirs []string, onlyAncestors bool, euid int, user string) string {
	var seen []string
	for _, dir := range dirs {
		for cur := dir; !slices.Contains(seen, cur); cur = filepath.Dir(cur) {
			seen = append(seen, cur)
			fi, err := os.Stat(cur)
			if err != nil {
				return fmt.Sprintf("%s cannot be checked: %v", cur, err)
			}
			if why := untrustedBy(cur, fi, onlyAncestors || !slices.Contains(dirs, cur), euid, user); why != "" {
				return why
			}
			if cur == "/" || cur == "." {
				break
			}
		}
	}
	return ""
}

// untrusted says why someone other than root and the worker's own user
// could change path, a file or directory on the command path, or "". An
// ancestor of a command_path directory may be writable by others when it
// is sticky, as /tmp is: nobody can then rename the directory away.
//
// POSIX ACLs need no reading: with an extended ACL the mode's group bits
// are the ACL's mask, which limits every named user and group entry and
// the owning group, so any write the ACL grants beyond the owner shows as
// group write here (TestACLWriteIsRefused asks the kernel).
func (p *Policy) untrusted(path string, fi os.FileInfo, ancestor bool) string {
	return untrustedBy(path, fi, ancestor, p.euid, "the worker's user")
}

// untrustedBy is untrusted for the user euid, named user in the answer.
func untrustedBy(path string, fi os.FileInfo, ancestor bool, euid int, user string) string {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != euid {
		return fmt.Sprintf("%s is owned by uid %d, neither root nor %s", path, st.Uid, user)
	}
	mode := fi.Mode()
	if mode.Perm()&0o022 != 0 && !(ancestor && mode&os.ModeSticky != 0) {
		sticky := ""
		if ancestor {
			sticky = " and not sticky"
		}
		return fmt.Sprintf("%s is writable by its group or by others (mode %04o)%s", path, mode.Perm(), sticky)
	}
	return ""
}

// UntrustedAncestors says why someone other than root and the user euid
// (named user) could rename dir away, through one of its ancestors, or
// "": the rule the worker holds its command_path to, for a directory of
// another process's (serve's data dir).
func UntrustedAncestors(dir string, euid int, user string) string {
	return untrustedUp([]string{filepath.Dir(dir)}, true, euid, user)
}

// UntrustedDirs lists the command_path directories that exist and that
// someone other than root and the worker's own user could change, each
// with why (the directory, or one of its ancestors). Commands found there
// are refused; the worker says so at start-up.
func (p *Policy) UntrustedDirs() []string {
	var out []string
	for _, dir := range p.commandPath {
		real, err := filepath.EvalSymlinks(dir)
		if err != nil {
			continue // missing now; each order checks it again
		}
		if why := p.untrustedDirs([]string{real}); why != "" {
			out = append(out, fmt.Sprintf("%s: %s", dir, why))
		}
	}
	return out
}

// contain enforces exec_root: the real file must lie inside it, and with
// follow_links off no element from exec_root down to the entry may be a
// symlink at all, httpexec's FOLLOW_LINKS=false.
func (p *Policy) contain(c command) error {
	rootReal, err := filepath.EvalSymlinks(p.execRoot)
	if err != nil {
		return order.FieldError(order.CodeUnprocessable, "command", "this host's exec_root is unavailable")
	}
	if !p.followLinks {
		var base string
		switch {
		case within(c.lexicalPath, p.execRoot):
			base = p.execRoot
		case within(c.lexicalPath, rootReal):
			base = rootReal
		default:
			return order.FieldError(order.CodeForbidden, "command", "command %s is outside this host's exec_root", c.lexicalPath)
		}
		rel, err := filepath.Rel(base, c.lexicalPath)
		if err != nil {
			return order.FieldError(order.CodeForbidden, "command", "command %s is outside this host's exec_root", c.lexicalPath)
		}
		cur := base
		for _, el := range strings.Split(rel, string(filepath.Separator)) {
			cur = filepath.Join(cur, el)
			fi, err := os.Lstat(cur)
			if err != nil {
				return order.FieldError(order.CodeUnprocessable, "command", "command %s is unavailable", c.lexicalPath)
			}
			if fi.Mode()&os.ModeSymlink != 0 {
				return order.FieldError(order.CodeForbidden, "command",
					"%s is a symlink, and this host does not follow links inside exec_root", cur)
			}
		}
	}
	if !within(c.realPath, rootReal) {
		return order.FieldError(order.CodeForbidden, "command",
			"command %s resolves to %s, outside this host's exec_root", c.lexicalPath, c.realPath)
	}
	return nil
}

// within reports whether the cleaned absolute path lies in or at dir.
func within(path, dir string) bool {
	if dir == "/" {
		return strings.HasPrefix(path, "/")
	}
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// executableFile reports whether path is, or links to, a regular file
// with an execute bit, and gives that file's information. Whether the
// run-as user may execute it is the kernel's call at exec time.
func executableFile(path string) (os.FileInfo, bool) {
	fi, err := os.Stat(path)
	return fi, err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// percentEncoded reports a %XX escape: a name that still carries one was
// decoded once too few times somewhere, and "%2e%2e" is how traversal
// attempts hide.
func percentEncoded(s string) bool {
	for i := 0; i+2 < len(s); i++ {
		if s[i] == '%' && isHex(s[i+1]) && isHex(s[i+2]) {
			return true
		}
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
