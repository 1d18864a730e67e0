package order

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"testing"
)

// TestCodeOfTextKnowsEveryCode: every constant of type Code declared in
// errors.go (the closed set), read from the source, comes back from
// CodeOfText of an *Error's text with it. CodeOfText names the set in a
// switch of its own, so a code added to the constants and not to the
// switch made its errors' stored results answer no code, with no test to
// notice.
func TestCodeOfTextKnowsEveryCode(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "errors.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Code" {
				continue
			}
			for i, name := range vs.Names {
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Errorf("%s is not a string literal: read its value another way", name.Name)
					continue
				}
				v, _ := strconv.Unquote(lit.Value)
				n++
				if got, ok := CodeOfText(Errorf(Code(v), "something").Error()); got != Code(v) || !ok {
					t.Errorf("CodeOfText of a %s (%q) error = %q, %v: add it to CodeOfText's switch", name.Name, v, got, ok)
				}
			}
		}
	}
	if n < 16 {
		t.Fatalf("found %d Code constants in errors.go, want at least 16: has the set moved?", n)
	}
}
