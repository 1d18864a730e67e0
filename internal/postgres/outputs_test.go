package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestGetOrderLeanLeavesLargeOutputs: GetOrderLean reads an order as
// GetOrder does, except that a finished order whose outputs printed
// LeaveOutputsFrom bytes or more comes without their contents, exactly
// when OutputsLeft says so; ReadOutputAt then reads the contents back in
// slices, and reads nothing of an order still running. A lean listing
// (Filter.Lean) reads each order as GetOrderLean does.
func TestGetOrderLeanLeavesLargeOutputs(t *testing.T) {
	e := newStoreEnv(t)
	e.own("web1", "w1")
	big := bytes.Repeat([]byte("out €😀\n"), 10000) // 130,000 bytes: cut inside runes below
	cases := []struct {
		name           string
		stdout, stderr []byte
		finish         bool
		left           bool
	}{
		{"large stdout", big, []byte("warning\n"), true, true},
		{"large stderr", nil, big, true, true},
		{"just under, both together", big[:postgres.LeaveOutputsFrom-10], big[:9], true, false},
		{"just at, both together", big[:postgres.LeaveOutputsFrom-10], big[:10], true, true},
		{"small", []byte("hi\n"), nil, true, false},
		{"running", nil, nil, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := e.insert("web1", "alice", nil)
			claimed := e.claim(o.ID, "w1")
			if c.finish {
				f := succeeded("")
				f.Result.Stdout = order.Output{Content: c.stdout, Bytes: int64(len(c.stdout))}
				f.Result.Stderr = order.Output{Content: c.stderr, Bytes: int64(len(c.stderr))}
				if err := e.store.Complete(e.ctx, o.ID, claimed.Attempt, f); err != nil {
					t.Fatal(err)
				}
			}
			whole := e.get(o.ID)
			lean, err := e.store.GetOrderLean(e.ctx, o.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got := postgres.OutputsLeft(lean); got != c.left {
				t.Fatalf("OutputsLeft = %v, want %v", got, c.left)
			}
			want := *whole
			if c.left {
				r := *whole.Result
				r.Stdout.Content, r.Stderr.Content = nil, nil
				want.Result = &r
			}
			if !reflect.DeepEqual(lean, &want) {
				t.Fatalf("lean read\n%+v\nwant\n%+v", lean, &want)
			}
			// A listing reads the same, lean or whole.
			for _, f := range []postgres.Filter{{Host: "web1", Limit: 1, Lean: true}, {Host: "web1", Limit: 1}} {
				listed, _, err := e.store.ListOrders(e.ctx, f)
				read := lean
				if !f.Lean {
					read = whole
				}
				if err != nil || len(listed) != 1 || !reflect.DeepEqual(listed[0], read) {
					t.Fatalf("listed (lean %v): %v %+v, want %+v", f.Lean, err, listed, read)
				}
			}
			if !c.left {
				return
			}
			for out, content := range map[postgres.Output][]byte{postgres.Stdout: whole.Result.Stdout.Content, postgres.Stderr: whole.Result.Stderr.Content} {
				var got []byte
				p := make([]byte, 4099) // slices that cut runes
				for off := int64(0); ; {
					n, err := e.store.ReadOutputAt(e.ctx, o.ID, out, p, off)
					if err != nil {
						t.Fatal(err)
					}
					got, off = append(got, p[:n]...), off+int64(n)
					if n < len(p) {
						break
					}
				}
				if !bytes.Equal(got, content) {
					t.Fatalf("%s read in slices: %d bytes, want %d", out, len(got), len(content))
				}
			}
		})
	}
	running := e.insert("web1", "alice", nil)
	e.claim(running.ID, "w1")
	if _, err := e.store.ReadOutputAt(e.ctx, running.ID, postgres.Stdout, make([]byte, 10), 0); !errors.Is(err, order.ErrNotFound) {
		t.Fatalf("read of a running order's output: %v, want not found", err)
	}
}

// TestListWithoutOutputsReadsNoContent: a listing with NoOutputs reads
// each order as the full listing does, except that no output content
// comes back, small or large, and its statement does not read the
// content columns at all: it runs for a role that may read every column
// of orders but stdout and stderr, which refuses the lean listing (it
// reads small contents).
func TestListWithoutOutputsReadsNoContent(t *testing.T) {
	e := newStoreEnv(t)
	e.own("web1", "w1")
	for _, out := range [][]byte{[]byte("hi\n"), bytes.Repeat([]byte("x"), 2*postgres.LeaveOutputsFrom), nil} {
		o := e.insert("web1", "alice", nil)
		claimed := e.claim(o.ID, "w1")
		f := succeeded(string(out))
		f.Result.Stderr = order.Output{Content: []byte("warn\n"), Bytes: 5, Truncated: true, SHA256: []byte{1, 2, 3}}
		if err := e.store.Complete(e.ctx, o.ID, claimed.Attempt, f); err != nil {
			t.Fatal(err)
		}
	}
	e.claim(e.insert("web1", "alice", nil).ID, "w1") // running: no result yet
	whole, _, err := e.store.ListOrders(e.ctx, postgres.Filter{Host: "web1", Limit: 10})
	if err != nil || len(whole) != 4 {
		t.Fatalf("full listing: %v, %d orders", err, len(whole))
	}
	want := make([]*order.Order, len(whole))
	for i, o := range whole {
		want[i] = o
		if o.Result != nil {
			bare, r := *o, *o.Result
			r.Stdout.Content, r.Stderr.Content = nil, nil
			bare.Result = &r
			want[i] = &bare
		}
	}

	name := fmt.Sprintf("orderly_lister_t%d", time.Now().UnixNano())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, q := range []string{"DROP OWNED BY " + name, "DROP ROLE " + name} {
			if _, err := e.pool.Exec(ctx, q); err != nil {
				t.Errorf("%s: %v", q, err)
			}
		}
	})
	var schema string
	var cols []string
	if err := e.pool.QueryRow(e.ctx, `SELECT current_schema(), array_agg(quote_ident(column_name::text) ORDER BY ordinal_position)
		FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'orders'
		AND column_name NOT IN ('stdout', 'stderr')`).Scan(&schema, &cols); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"CREATE ROLE " + name + " LOGIN",
		"GRANT USAGE ON SCHEMA " + pgx.Identifier{schema}.Sanitize() + " TO " + name,
		"GRANT SELECT (" + strings.Join(cols, ", ") + ") ON orders TO " + name,
	} {
		if _, err := e.pool.Exec(e.ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	u, err := url.Parse(e.pool.Config().ConnConfig.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(name)
	lister, _ := testenv.Store(t, u.String())

	got, _, err := lister.ListOrders(e.ctx, postgres.Filter{Host: "web1", Limit: 10, NoOutputs: true, Lean: true})
	if err != nil {
		t.Fatalf("listing without outputs, as a role that may not read them: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("listed without outputs\n%+v\nwant\n%+v", got, want)
	}
	if _, _, err := lister.ListOrders(e.ctx, postgres.Filter{Host: "web1", Limit: 10, Lean: true}); err == nil ||
		!strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("lean listing as a role that may not read the outputs: %v, want permission denied", err)
	}
}
