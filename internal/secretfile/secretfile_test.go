package secretfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadTakesOnlyTheReadersOwnFile: the reader's own 0600 file is read;
// a missing one is fs.ErrNotExist; a mode others may read, a symbolic
// link, a second name and a file larger than a secret are each an
// *Error naming why (another user's file and a FIFO: cmd/orderly's and
// natsembed's tests, which plant them as nobody).
func TestReadTakesOnlyTheReadersOwnFile(t *testing.T) {
	dir := t.TempDir()
	own := filepath.Join(dir, "own")
	if err := os.WriteFile(own, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := Read(own); err != nil || string(b) != "secret\n" {
		t.Fatalf("own file: %q %v", b, err)
	}
	if _, err := Read(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v, want fs.ErrNotExist", err)
	}
	shared := filepath.Join(dir, "shared")
	if err := os.WriteFile(shared, []byte("secret\n"), 0o600); err != nil || os.Chmod(shared, 0o640) != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(own, link); err != nil {
		t.Fatal(err)
	}
	hard := filepath.Join(dir, "hard")
	if err := os.WriteFile(filepath.Join(dir, "kept"), []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "kept"), hard); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, maxSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	for path, says := range map[string]string{shared: "readable by others (mode 640)", link: "symbolic link", hard: "2 names", big: "larger than a secret"} {
		b, err := Read(path)
		var se *Error
		if !errors.As(err, &se) || !strings.Contains(err.Error(), says) || b != nil {
			t.Errorf("%s: %q %v, want an *Error saying %q", filepath.Base(path), b, err, says)
		}
		if se != nil && se.Shared != (path == shared) {
			t.Errorf("%s: Shared %v", filepath.Base(path), se.Shared)
		}
	}
}
