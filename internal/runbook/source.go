package runbook

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

// maxRunbookBytes bounds one runbook file: it is read whole per request.
const maxRunbookBytes = 4 << 20

// ErrNotFound is returned for a name that is not a runbook of the source:
// missing, not a plain *.md file name, not a regular file, or a symlink
// that leaves the directory.
var ErrNotFound = errors.New("runbook not found")

// What an input check finds, as an *inputError naming the path.
var (
	errInputMissing    = errors.New("input does not exist")
	errInputEscapes    = errors.New("input escapes the runbook directory")
	errInputInvalid    = errors.New("input cannot be copied into a run directory")
	errInputUnreadable = errors.New("input cannot be read")
)

// inputError is a finding about one path of an input: the input itself
// or a file of its tree, relative to the runbook directory.
type inputError struct {
	err  error // one of the errInput* above
	path string
	why  string // for errInputInvalid
}

func (e *inputError) Error() string { return e.err.Error() + ": " + e.path }
func (e *inputError) Unwrap() error { return e.err }

func inputProblem(in string, err error) Problem {
	p, why := in, ""
	var ie *inputError
	if errors.As(err, &ie) {
		p, why = ie.path, ie.why
	}
	switch {
	case errors.Is(err, errInputEscapes):
		return Problem{Code: CodeInputEscapes, Message: "Input path escapes runbook directory: " + p}
	case errors.Is(err, errInputInvalid):
		return Problem{Code: CodeInputInvalid, Message: invalidInput(p, why)}
	case errors.Is(err, errInputUnreadable):
		return Problem{Code: CodeInputUnread, Message: "Input file cannot be read: " + p}
	}
	return Problem{Code: CodeInputMissing, Message: "Required input file does not exist: " + p}
}

func tooLarge(max int64) Problem {
	return Problem{Code: CodeInputsTooLarge, Message: fmt.Sprintf(
		"The script and its input files are larger than runbooks.max_input_bytes (%d bytes)", max)}
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
// in .md, with no directory part, of valid UTF-8 without control
// characters (a run's command is runbook:<name>, which an order may not
// hold otherwise and PostgreSQL's text could not store).
func ValidName(name string) bool {
	return strings.HasSuffix(name, ".md") && len(name) > 3 && len(name) <= 255 &&
		!strings.ContainsAny(name, "/\\") && !strings.HasPrefix(name, ".") && utf8.ValidString(name) &&
		!strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// List returns every runbook of the directory, sorted by file name. A
// file that cannot be read is left out; one over the size limit is listed
// with its problem (TooLarge).
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
		// Not read, so not parsed nor cached: a runbook whose only
		// content is the problem, shown where the text's problems are.
		return tooLargeRunbook(name, st.Size()), nil
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

// tooLargeRunbook is the runbook file name of size bytes, over the limit:
// no text, one problem.
func tooLargeRunbook(name string, size int64) *Runbook {
	rb := &Runbook{File: name, Sections: map[string]string{}}
	rb.problem(CodeTooLarge, fmt.Sprintf("Runbook file is too large: %d bytes, over the limit of %d bytes (4 MiB)",
		size, maxRunbookBytes))
	return rb
}

// TooLarge reports whether rb is a file over the size limit, which was
// not read: it has no text to show.
func (rb *Runbook) TooLarge() bool {
	return slices.ContainsFunc(rb.Problems, func(p Problem) bool { return p.Code == CodeTooLarge })
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

// Exists checks one input of a runbook as a run would copy it: it must
// exist inside the directory, symlinks resolved; a directory's files must
// stay inside it, be readable and have names a run directory can hold.
// No file is read.
func (s *Source) Exists(input string) error {
	_, err := s.plan(input, math.MaxInt64)
	return err
}

// File is one input file as a run receives it.
type File struct {
	Path string      // relative to the run's directory, forward slashes
	Mode fs.FileMode // permission bits only
	Data []byte
}

// planned is one file an input puts in the run directory.
type planned struct {
	dst  string // in the run directory, forward slashes
	src  string // resolved, inside the runbook directory
	rel  string // as the problems name it: the input, or input/path in its tree
	mode fs.FileMode
	size int64
}

// bytes is what the file adds to a script order (order.Script.Size).
func (f planned) bytes() int64 { return int64(len(f.dst)) + f.size }

// errOverBudget stops a plan whose files pass its budget: the walk of a
// huge tree ends there.
var errOverBudget = errors.New("over the input budget")

// plan lists the files input lands as in a run directory: a file under
// its base name, a directory under its base name with its whole tree.
// Symlinks inside a directory input are refused when they leave the
// runbook directory and followed otherwise (a symlinked directory is not
// entered); other non-regular files in a tree are skipped. It stops with
// errOverBudget once the files' names and sizes pass budget bytes.
func (s *Source) plan(input string, budget int64) ([]planned, error) {
	if Escapes(input) {
		return nil, &inputError{err: errInputEscapes, path: input}
	}
	base := landing(input)
	if why := unfit(base); why != "" {
		return nil, &inputError{err: errInputInvalid, path: input, why: why}
	}
	p, err := s.inside(input)
	if errors.Is(err, ErrNotFound) {
		return nil, &inputError{err: errInputMissing, path: input}
	}
	if errors.Is(err, errInputEscapes) {
		return nil, &inputError{err: errInputEscapes, path: input}
	}
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(p)
	if err != nil {
		return nil, &inputError{err: errInputMissing, path: input}
	}
	if !st.IsDir() {
		f := planned{dst: base, src: p, rel: input, mode: st.Mode(), size: st.Size()}
		if err := readable(f, st); err != nil {
			return nil, err
		}
		if f.bytes() > budget {
			return nil, errOverBudget
		}
		return []planned{f}, nil
	}
	root, err := filepath.EvalSymlinks(s.dir)
	if err != nil {
		return nil, fmt.Errorf("resolve runbooks.dir: %w", err)
	}
	var files []planned
	err = filepath.WalkDir(p, func(walked string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(p, walked)
		name := filepath.ToSlash(filepath.Join(input, rel))
		if err != nil {
			return &inputError{err: errInputUnreadable, path: name}
		}
		fromRoot, err := filepath.Rel(root, walked)
		if err != nil {
			return &inputError{err: errInputEscapes, path: name}
		}
		real, err := s.inside(fromRoot)
		if errors.Is(err, ErrNotFound) {
			return nil // a dangling symlink: nothing to copy
		}
		if err != nil {
			return &inputError{err: errInputEscapes, path: name}
		}
		st, err := os.Stat(real)
		if err != nil || st.IsDir() || !st.Mode().IsRegular() {
			return nil
		}
		if strings.ContainsRune(rel, '\\') {
			return &inputError{err: errInputInvalid, path: name, why: "a run directory cannot hold a name with a backslash"}
		}
		f := planned{dst: filepath.ToSlash(filepath.Join(base, rel)), src: real, rel: name, mode: st.Mode(), size: st.Size()}
		if err := readable(f, st); err != nil {
			return err
		}
		if budget -= f.bytes(); budget < 0 {
			return errOverBudget
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return files, nil
}

// readable refuses what a run could not read: anything but a regular
// file (a FIFO would block the read), or a file that does not open.
func readable(f planned, st fs.FileInfo) error {
	if !st.Mode().IsRegular() {
		return &inputError{err: errInputInvalid, path: f.rel, why: "not a regular file or a directory"}
	}
	h, err := os.OpenFile(f.src, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return &inputError{err: errInputUnreadable, path: f.rel}
	}
	return h.Close()
}

// CheckInputs returns every problem a run of rb would meet with its input
// files, reading none of them: what Exists finds for each input, and
// whether the script and the files fit in max bytes together (counted as
// order.Script.Size counts them).
func (s *Source) CheckInputs(rb *Runbook, max int64) []Problem {
	var problems []Problem
	budget := max - int64(len(rb.Script))
	over := budget < 0
	for _, in := range rb.Inputs {
		files, err := s.plan(in, budget)
		switch {
		case errors.Is(err, errOverBudget):
			over = true
		case err != nil:
			problems = append(problems, inputProblem(in, err))
		}
		for _, f := range files {
			budget -= f.bytes()
		}
	}
	if over {
		problems = append(problems, tooLarge(max))
	}
	return problems
}

// Inputs reads the runbook's input files as CheckInputs plans them, the
// script and the files at most max bytes together. The files may have
// changed since they were checked: what reading them meets is reported
// with the same problem codes.
func (s *Source) Inputs(rb *Runbook, max int64) ([]File, []Problem) {
	var (
		files    []File
		problems []Problem
		budget   = max - int64(len(rb.Script))
		seen     = map[string]string{}
	)
	for _, in := range rb.Inputs {
		plan, err := s.plan(in, budget)
		if errors.Is(err, errOverBudget) {
			return nil, append(problems, tooLarge(max))
		}
		if err != nil {
			problems = append(problems, inputProblem(in, err))
			continue
		}
		for _, f := range plan {
			if first, dup := seen[f.dst]; dup {
				problems = append(problems, Problem{Code: CodeInputClash, Message: clash(f.dst, first, in)})
				continue
			}
			seen[f.dst] = in
			data, err := readInput(f.src, budget)
			if err != nil {
				problems = append(problems, inputProblem(in, &inputError{err: errInputUnreadable, path: f.rel}))
				continue
			}
			if budget -= int64(len(f.dst) + len(data)); budget < 0 {
				return nil, append(problems, tooLarge(max))
			}
			files = append(files, File{Path: f.dst, Mode: f.mode.Perm(), Data: data})
		}
	}
	if budget < 0 {
		problems = append(problems, tooLarge(max))
	}
	if len(problems) > 0 {
		return nil, problems
	}
	return files, nil
}

// readInput reads a regular file, at most limit+1 bytes: enough to tell it
// is over the cap without reading a file that grew since it was checked.
func readInput(p string, limit int64) ([]byte, error) {
	h, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	if st, err := h.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil, errInputInvalid
	}
	return io.ReadAll(io.LimitReader(h, max(limit, 0)+1))
}
