package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"testing"

	"github.com/orderly-run/orderly/internal/config"
)

// TestTokenNeedsEveryHashByte: a token is accepted only when all 32 bytes
// of its SHA-256 equal a registered hash. For each byte position, a
// registered hash that differs from the presented token's hash in that
// byte alone (so it shares a prefix of up to 31 bytes with it) must not
// match. A comparison over a prefix, or over any subset of the bytes, fails
// here.
func TestTokenNeedsEveryHashByte(t *testing.T) {
	const presented = "ord_presented-token"
	sum := sha256.Sum256([]byte(presented))
	for i := range sha256.Size {
		for _, flip := range []byte{0x01, 0x80} {
			near := sum
			near[i] ^= flip
			a, err := New(config.Auth{Tokens: []config.Token{
				{Name: "near", SHA256: hex.EncodeToString(near[:]), Roles: []string{"admin"}},
			}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if p, err := a.Authenticate("Bearer " + presented); err == nil {
				t.Fatalf("hash differing only in byte %d (bit %#x) matched as %q", i, flip, p.Name)
			}
		}
	}
	// The exact hash still matches, among near misses on either side.
	var tokens []config.Token
	for _, i := range []int{0, 4, 16, 31} {
		near := sum
		near[i] ^= 0xff
		tokens = append(tokens, config.Token{Name: fmt.Sprintf("near%d", i), SHA256: hex.EncodeToString(near[:])})
	}
	tokens = append(tokens[:2], append([]config.Token{{Name: "exact", SHA256: hex.EncodeToString(sum[:])}}, tokens[2:]...)...)
	a, err := New(config.Auth{Tokens: tokens}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Authenticate("Bearer " + presented)
	if err != nil || p.Name != "exact" {
		t.Fatalf("exact hash: principal %q, error %v", p.Name, err)
	}
}

// TestFindHashSharedPrefixes runs findHash on crafted hashes that share a
// long prefix (and a long suffix) with the one looked up.
func TestFindHashSharedPrefixes(t *testing.T) {
	var want [sha256.Size]byte
	for i := range want {
		want[i] = byte(i * 7)
	}
	differAt := func(i int) [sha256.Size]byte {
		h := want
		h[i] ^= 0x5a
		return h
	}
	tests := []struct {
		name    string
		entries [][sha256.Size]byte
		want    int
	}{
		{"31-byte shared prefix only", [][sha256.Size]byte{differAt(31)}, -1},
		{"4-byte shared prefix", [][sha256.Size]byte{differAt(4)}, -1},
		{"shared prefix and suffix, middle differs", [][sha256.Size]byte{differAt(15), differAt(16)}, -1},
		{"first byte differs", [][sha256.Size]byte{differAt(0)}, -1},
		{"exact among near misses", [][sha256.Size]byte{differAt(31), want, differAt(0), differAt(3)}, 1},
		{"exact last", [][sha256.Size]byte{differAt(30), differAt(31), want}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries := make([]tokenEntry, len(tt.entries))
			for i, h := range tt.entries {
				entries[i] = tokenEntry{name: "e", hash: h}
			}
			if got := findHash(entries, want); got != tt.want {
				t.Errorf("findHash = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestTokenComparisonIsConstantTime guards the shape of the lookup, since
// a timing test cannot tell a constant-time comparison from a fast one on
// 32 bytes: staticToken finds the token only through findHash, and
// findHash compares with subtle.ConstantTimeCompare over the whole hashes
// (full slices, no bounds), selects with subtle.ConstantTimeSelect, and
// neither exits its loop early nor compares with == or bytes functions.
func TestTokenComparisonIsConstantTime(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "token.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, err := parser.ParseFile(fset, "auth.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	find := funcDecl(t, f, "findHash")
	static := funcDecl(t, a, "staticToken")

	calls := map[string]int{}
	ast.Inspect(find.Body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CallExpr:
			name := callName(n)
			calls[name]++
			if name == "subtle.ConstantTimeCompare" {
				for _, arg := range n.Args {
					s, ok := arg.(*ast.SliceExpr)
					if !ok || s.Low != nil || s.High != nil || s.Max != nil {
						t.Errorf("%s: ConstantTimeCompare argument is not a whole hash [:]", fset.Position(arg.Pos()))
					}
				}
			}
		case *ast.BinaryExpr:
			if n.Op == token.EQL || n.Op == token.NEQ {
				t.Errorf("%s: findHash compares with %s", fset.Position(n.Pos()), n.Op)
			}
		case *ast.RangeStmt, *ast.ForStmt:
			ast.Inspect(n, func(m ast.Node) bool {
				switch m := m.(type) {
				case *ast.ReturnStmt:
					t.Errorf("%s: findHash returns from inside its loop", fset.Position(m.Pos()))
				case *ast.BranchStmt:
					t.Errorf("%s: findHash leaves or skips its loop with %s", fset.Position(m.Pos()), m.Tok)
				case *ast.IfStmt, *ast.SwitchStmt:
					t.Errorf("%s: findHash branches inside its loop", fset.Position(m.Pos()))
				}
				return true
			})
		}
		return true
	})
	if calls["subtle.ConstantTimeCompare"] != 1 || calls["subtle.ConstantTimeSelect"] != 1 {
		t.Errorf("findHash calls %v, want one subtle.ConstantTimeCompare and one subtle.ConstantTimeSelect", calls)
	}
	for name := range calls {
		switch name {
		case "subtle.ConstantTimeCompare", "subtle.ConstantTimeSelect":
		default:
			t.Errorf("findHash calls %s", name)
		}
	}

	usesFind := false
	ast.Inspect(static.Body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CallExpr:
			switch name := callName(n); name {
			case "findHash":
				usesFind = true
			case "bytes.Equal", "bytes.HasPrefix", "bytes.Compare", "strings.HasPrefix", "strings.EqualFold":
				t.Errorf("%s: staticToken compares with %s", fset.Position(n.Pos()), name)
			}
		case *ast.BinaryExpr:
			if (n.Op == token.EQL || n.Op == token.NEQ) && mentionsHash(n) {
				t.Errorf("%s: staticToken compares a hash with %s", fset.Position(n.Pos()), n.Op)
			}
		case *ast.IndexExpr:
			if mentionsIdent(n.Index, "sum") {
				t.Errorf("%s: staticToken looks the hash up by index (a map lookup is not constant-time)", fset.Position(n.Pos()))
			}
		}
		return true
	})
	if !usesFind {
		t.Error("staticToken does not look tokens up with findHash")
	}
}

func funcDecl(t *testing.T, f *ast.File, name string) *ast.FuncDecl {
	t.Helper()
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == name {
			return fd
		}
	}
	t.Fatalf("no func %s in %s", name, f.Name.Name)
	return nil
}

// callName is pkg.Func or Func of a call, "" for anything else.
func callName(c *ast.CallExpr) string {
	switch fn := c.Fun.(type) {
	case *ast.Ident:
		return fn.Name
	case *ast.SelectorExpr:
		if x, ok := fn.X.(*ast.Ident); ok {
			return x.Name + "." + fn.Sel.Name
		}
		return "." + fn.Sel.Name
	}
	return ""
}

func mentionsHash(n ast.Node) bool {
	return mentionsIdent(n, "sum") || mentionsIdent(n, "hash")
}

func mentionsIdent(n ast.Node, name string) bool {
	found := false
	ast.Inspect(n, func(m ast.Node) bool {
		switch m := m.(type) {
		case *ast.Ident:
			found = found || m.Name == name
		case *ast.SelectorExpr:
			found = found || m.Sel.Name == name
		}
		return !found
	})
	return found
}
