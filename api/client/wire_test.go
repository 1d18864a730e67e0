package client_test

import (
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/api/client"
	"github.com/orderly-run/orderly/internal/runbook"
)

// jsonFields are the JSON names of t's fields.
func jsonFields(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous {
			out = append(out, jsonFields(f.Type)...)
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// TestWireTypes keeps the client's types (its own, so that importing the
// client does not link the server) equal on the wire to the server's.
func TestWireTypes(t *testing.T) {
	for _, pair := range [][2]any{
		{client.Order{}, api.Order{}},
		{client.Result{}, api.Result{}},
		{client.Stream{}, api.Stream{}},
		{client.Chunk{}, api.Chunk{}},
		{client.OrderList{}, api.OrderList{}},
		{client.Batch{}, api.Batch{}},
		{client.HostRefusal{}, api.HostRefusal{}},
		{client.ErrorDetail{}, api.ErrorDetail{}},
		{client.Host{}, api.Host{}},
		{client.Cancellation{}, api.Cancellation{}},
		{client.Decision{}, api.Decision{}},
		{client.SubmitRequest{}, api.SubmitRequest{}},
		{client.StreamIn{}, api.StreamIn{}},
		{client.StreamOut{}, api.StreamOut{}},
		{client.OrderAction{}, api.OrderAction{}},
		{client.Runbook{}, api.RunbookSummary{}},
		{client.RunbookRequest{}, api.RunbookRequest{}},
		{client.RunbookDetail{}, api.RunbookView{}},
		{client.RunbookEnvVar{}, runbook.EnvVar{}},
		{client.RunbookClaim{}, runbook.Claim{}},
		{client.RunbookProblem{}, runbook.Problem{}},
		{client.Action{}, api.ActionView{}},
		{client.ActionLimit{}, api.ActionLimit{}},
		{client.ActionParam{}, api.ParamView{}},
		{client.Maintenance{}, api.HostMaintenance{}},
	} {
		ours, theirs := reflect.TypeOf(pair[0]), reflect.TypeOf(pair[1])
		if a, b := jsonFields(ours), jsonFields(theirs); !slices.Equal(a, b) {
			t.Errorf("client.%s has the JSON fields %v; the server's %s has %v", ours.Name(), a, theirs, b)
		}
	}
}

// TestErrorCodes keeps the client's codes equal to the spec's ErrorCode.
func TestErrorCodes(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPISpec())
	if err != nil {
		t.Fatal(err)
	}
	var spec []string
	for _, v := range doc.Components.Schemas["ErrorCode"].Value.Enum {
		spec = append(spec, v.(string))
	}
	ours := []client.Code{client.CodeInvalid, client.CodeUnauthenticated, client.CodeForbidden, client.CodeNotFound,
		client.CodeMethodNotAllowed, client.CodeConflict, client.CodeHostInMaintenance, client.CodePreconditionFailed, client.CodeTooLarge, client.CodeUnsupportedType,
		client.CodeUnprocessable, client.CodeConfirmationRequired, client.CodeConfigEmpty, client.CodeIdempotencyReused,
		client.CodeRateLimited, client.CodeHeaderTooLarge, client.CodeInternal, client.CodeUnavailable}
	var got []string
	for _, c := range ours {
		got = append(got, string(c))
	}
	sort.Strings(spec)
	sort.Strings(got)
	if !slices.Equal(spec, got) {
		t.Fatalf("client codes %v, spec's ErrorCode %v", got, spec)
	}
}
