package api

import (
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestUnavailableLogNamesAnotherCauseDuringARun: NATS is down and every
// submission answers 503 "event bus unavailable"; meanwhile PostgreSQL
// runs out of disk and a read answers 503 for that, then the submissions
// go on failing. The run logged its first cause only, then summed the
// rest up every 10 s with the latest cause: the disk, which began
// during the run, was named only if its 503 happened to be the latest at
// a summary, and here it never was. A cause not seen in the run is now
// logged at its first 503, once.
func TestUnavailableLogNamesAnotherCauseDuringARun(t *testing.T) {
	logs := &testenv.LogBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	var l unavailableLog
	bus := &order.Error{Code: order.CodeUnavailable, Message: "event bus unavailable", Err: errors.New("nats: no servers available for connection")}
	disk := &order.Error{Code: order.CodeUnavailable, Message: "database unavailable: PostgreSQL is out of disk space",
		Err: errors.New("ERROR: could not extend file: No space left on device (SQLSTATE 53100)")}
	submit := httptest.NewRequest("POST", "/v1/orders", nil)
	read := httptest.NewRequest("GET", "/v1/orders/x", nil)
	for range 5 {
		l.failed(logger, submit, bus)
	}
	for range 3 {
		l.failed(logger, read, disk)
	}
	for range 5 {
		l.failed(logger, submit, bus)
	}
	out := logs.String()
	if n := strings.Count(out, `"msg":"request failed"`); n != 2 {
		t.Fatalf("%d \"request failed\" lines for two causes, want 2:\n%s", n, out)
	}
	if n := strings.Count(out, "No space left on device"); n != 1 {
		t.Fatalf("the disk's cause is in %d lines, want 1:\n%s", n, out)
	}
	if l.total != 13 || l.quiet != 11 {
		t.Fatalf("the run counts %d failures, %d not logged; want 13 and 11", l.total, l.quiet)
	}
}
