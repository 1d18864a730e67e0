package runbook

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxRunbookBytes bounds one runbook file: it is read whole per request.
const maxRunbookBytes = 4 << 20

// ErrNotFound is returned for a name that is not a runbook of the source:
// missing, not a plain *.md file name, not a regular file, or a symlink
// that leaves the directory.
var ErrNotFound = errors.New("runbook not found")

// errInputMissing and errInputEscapes are what an input check finds.
var (
	errInputMissing = errors.New("input does not exist")
	errInputEscapes = errors.New("input escapes the runbook directory")
)

func inputProblem(in string, err error) Problem {
	if errors.Is(err, errInputEscapes) {
		return Problem{Code: CodeInputEscapes, Message: "Input path escapes runbook directory: " + in}
	}
	return Problem{Code: CodeInputMissing, Message: "Required input file does not exist: " + in}
}

// Source is a directory of runbooks (runbooks.dir), read at request time
// so that edits are picked up at once. Each file version is parsed once:
// the cache is keyed by the file's size, modification time and SHA-256,
// so an edit that keeps size and mtime still reparses.
type Source struct {
	dir string

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	size  int64
	mtime time.Time
	sum   [sha256.Size]byte
	rb    *Runbook
}

// NewSource returns the source for dir. It fails when dir is not a
// directory.
func NewSource(dir string) (*Source, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("runbooks.dir %q: %w", dir, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("runbooks.dir: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("runbooks.dir %q is not a directory", dir)
	}
	return &Source{dir: abs, cache: map[string]cached{}}, nil
}

// Dir is the directory the source reads.
func (s *Source) Dir() string { return s.dir }

// ValidName reports whether name can name a runbook: a file name ending
// in .md, with no directory part.
func ValidName(name string) bool {
	return strings.HasSuffix(name, ".md") && len(name) > 3 && len(name) <= 255 &&
		!strings.ContainsAny(name, "/\\\x00") && !strings.HasPrefix(name, ".")
}

// List returns every runbook of the directory, sorted by file name. A
// file that cannot be read is left out.
func (s *Source) List() ([]*Runbook, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("read runbooks.dir: %w", err)
	}
	var list []*Runbook
	for _, e := range entries {
		if !ValidName(e.Name()) {
			continue
		}
		rb, err := s.Load(e.Name())
		if err != nil {
			continue
		}
		list = append(list, rb)
	}
	slices.SortFunc(list, func(a, b *Runbook) int { return strings.Compare(a.File, b.File) })
	return list, nil
}

// Load reads and parses the runbook name. The result is shared: callers
// must not modify it.
func (s *Source) Load(name string) (*Runbook, error) {
	if !ValidName(name) {
		return nil, ErrNotFound
	}
	p, err := s.inside(name)
	if errors.Is(err, errInputEscapes) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, ErrNotFound
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return nil, ErrNotFound
	}
	if st.Size() > maxRunbookBytes {
		return nil, fmt.Errorf("runbook %s is larger than %d bytes", name, maxRunbookBytes)
	}
	text, err := io.ReadAll(io.LimitReader(f, maxRunbookBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read runbook %s: %w", name, err)
	}
	sum := sha256.Sum256(text)
	s.mu.Lock()
	c, ok := s.cache[name]
	s.mu.Unlock()
	if ok && c.size == st.Size() && c.mtime.Equal(st.ModTime()) && c.sum == sum {
		return c.rb, nil
	}
	rb := Parse(name, text)
	s.mu.Lock()
	s.cache[name] = cached{size: st.Size(), mtime: st.ModTime(), sum: sum, rb: rb}
	s.mu.Unlock()
	return rb, nil
}

// inside resolves rel against the directory, symlinks included, and
// refuses a path that ends up outside it.
func (s *Source) inside(rel string) (string, error) {
	real, err := filepath.EvalSymlinks(filepath.Join(s.dir, rel))
	if err != nil {
		return "", ErrNotFound
	}
	root, err := filepath.EvalSymlinks(s.dir)
	if err != nil {
		return "", fmt.Errorf("resolve runbooks.dir: %w", err)
	}
	if real != root && !strings.HasPrefix(real, root+string(filepath.Separator)) {
		return "", errInputEscapes
	}
	return real, nil
}

// Exists checks one input of a runbook: it must exist inside the
// directory, symlinks resolved.
func (s *Source) Exists(input string) error {
	if Escapes(input) {
		return errInputEscapes
	}
	p, err := s.inside(input)
	if errors.Is(err, ErrNotFound) {
		return errInputMissing
	}
	if err != nil {
		return err
	}
	if _, err := os.Stat(p); err != nil {
		return errInputMissing
	}
	return nil
}

// File is one input file as a run receives it.
type File struct {
	Path string      // relative to the run's directory, forward slashes
	Mode fs.FileMode // permission bits only
	Data []byte
}

// Inputs reads the runbook's input files, at most max bytes together. A
// file input lands in the run's directory under its base name (as stage0
// copied them); a directory input lands under its base name with its
// whole tree. Symlinks inside a directory input are refused when they
// leave the runbook directory and followed otherwise.
func (s *Source) Inputs(rb *Runbook, max int64) ([]File, error) {
	var (
		files []File
		total int64
		seen  = map[string]bool{}
	)
	add := func(dst, src string, mode fs.FileMode) error {
		if seen[dst] {
			return fmt.Errorf("two inputs land on %s", dst)
		}
		seen[dst] = true
		data, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("read input %s: %w", dst, err)
		}
		total += int64(len(data))
		if total > max {
			return fmt.Errorf("the input files are larger than runbooks.max_input_bytes (%d bytes)", max)
		}
		files = append(files, File{Path: dst, Mode: mode.Perm(), Data: data})
		return nil
	}
	for _, in := range rb.Inputs {
		if err := s.Exists(in); err != nil {
			return nil, errors.New(inputProblem(in, err).Message)
		}
		p, _ := s.inside(in)
		st, err := os.Stat(p)
		if err != nil {
			return nil, errors.New(inputProblem(in, errInputMissing).Message)
		}
		base := filepath.Base(filepath.Clean(in))
		if !st.IsDir() {
			if err := add(base, p, st.Mode()); err != nil {
				return nil, err
			}
			continue
		}
		err = filepath.WalkDir(p, func(walked string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(p, walked)
			real, err := s.inside(filepath.Join(strings.TrimPrefix(p, s.root()), rel))
			if err != nil {
				return fmt.Errorf("Input path escapes runbook directory: %s", filepath.ToSlash(filepath.Join(in, rel)))
			}
			st, err := os.Stat(real)
			if err != nil || st.IsDir() {
				return nil
			}
			if !st.Mode().IsRegular() {
				return nil
			}
			return add(filepath.ToSlash(filepath.Join(base, rel)), real, st.Mode())
		})
		if err != nil {
			return nil, err
		}
	}
	return files, nil
}

// root is the directory with its symlinks resolved, with a trailing
// separator, for turning a resolved path back into a relative one.
func (s *Source) root() string {
	r, err := filepath.EvalSymlinks(s.dir)
	if err != nil {
		r = s.dir
	}
	return r + string(filepath.Separator)
}
