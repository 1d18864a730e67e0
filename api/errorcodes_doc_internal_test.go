package api

import (
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/orderly-run/orderly/internal/order"
)

// orderCodes reads the closed set of order.Code constants from
// internal/order/errors.go, so that a code added there is seen here
// without anyone listing it.
func orderCodes(t *testing.T) []order.Code {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "../internal/order/errors.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var codes []order.Code
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			v := s.(*ast.ValueSpec)
			if id, ok := v.Type.(*ast.Ident); !ok || id.Name != "Code" || len(v.Values) != 1 {
				continue
			}
			lit, ok := v.Values[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				t.Fatalf("%s is not a string literal", v.Names[0].Name)
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatal(err)
			}
			codes = append(codes, order.Code(s))
		}
	}
	return codes
}

// TestErrorCodeSchemaMatchesStatusOf checks the spec's ErrorCode against
// the code: its enum is order's codes and the router's
// method_not_allowed, and the status its table gives each code is the one
// statusOf answers with (api/client's TestErrorCodes keeps the client's
// constants equal to the same enum).
func TestErrorCodeSchemaMatchesStatusOf(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(OpenAPISpec())
	if err != nil {
		t.Fatal(err)
	}
	schema := doc.Components.Schemas["ErrorCode"].Value
	var enum []string
	for _, v := range schema.Enum {
		enum = append(enum, v.(string))
	}
	table := map[string]int{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| ([0-9]{3})\\b").FindAllStringSubmatch(schema.Description, -1) {
		table[m[1]], _ = strconv.Atoi(m[2])
	}

	codes := orderCodes(t)
	if len(codes) < 10 {
		t.Fatalf("read only %d codes from internal/order/errors.go", len(codes))
	}
	want := map[string]int{"method_not_allowed": http.StatusMethodNotAllowed}
	for _, c := range codes {
		want[string(c)] = statusOf(c)
	}
	for code, status := range want {
		if !slices.Contains(enum, code) {
			t.Errorf("the spec's ErrorCode enum lacks %s", code)
		}
		switch got, ok := table[code]; {
		case !ok:
			t.Errorf("the spec's ErrorCode table lacks %s", code)
		case got != status:
			t.Errorf("the spec's ErrorCode table says %s is %d; statusOf answers %d", code, got, status)
		}
	}
	for _, code := range enum {
		if _, ok := want[code]; !ok {
			t.Errorf("the spec's ErrorCode enum has %s, which no order.Code is", code)
		}
	}
	for code := range table {
		if _, ok := want[code]; !ok {
			t.Errorf("the spec's ErrorCode table has %s, which no order.Code is", code)
		}
	}
	if !strings.Contains(schema.Description, "api/errors.go") {
		t.Error("the spec's ErrorCode no longer says where the mapping is")
	}
}
