package compat

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/config"
)

// TestStage0DevLoginBodyTooLargeIs413: a /dev-login body past 64 KiB
// (or http.max_body_bytes, when less) is 413 "Request body too large" in
// stage0's {"error": …}, whether its Content-Length says so or it turns
// out longer, as validate's and execute's are; it was cut at 64 KiB and
// answered 400 "Invalid JSON body", calling orderly's limit the
// client's malformed JSON. A body within the limit still signs a token.
func TestStage0DevLoginBodyTooLargeIs413(t *testing.T) {
	sc := config.Stage0Compat{JWTSecret: "a-secret-for-the-test-only-0123456789", JWTIssuer: "dev-idp", JWTAudience: "dev-api", JWTAlgorithm: "HS256", JWTTTL: time.Hour}
	big := `{"subject": "` + strings.Repeat("x", devLoginMaxBody) + `"}`
	small := `{"subject": "dev-user-2", "roles": ["ops"]}`
	chunked := func(body string) *http.Request {
		r := httptest.NewRequest("POST", "/dev-login", strings.NewReader(body))
		r.ContentLength = -1 // the length shows only when read
		return r
	}
	for _, tc := range []struct {
		what    string
		r       *http.Request
		maxBody int64
		status  int
		err     string
	}{
		{"declared past 64 KiB", httptest.NewRequest("POST", "/dev-login", strings.NewReader(big)), 1 << 20, 413, "Request body too large"},
		{"chunked past 64 KiB", chunked(big), 1 << 20, 413, "Request body too large"},
		{"past http.max_body_bytes", chunked(small), 16, 413, "Request body too large"},
		{"within the limits", chunked(small), 1 << 20, 200, ""},
		{"malformed", chunked(`{"subject":`), 1 << 20, 400, "Invalid JSON body"},
	} {
		w := httptest.NewRecorder()
		(&Stage0{}).devLogin(w, tc.r, sc, tc.maxBody)
		var m map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
			t.Fatalf("%s: body is not JSON: %q", tc.what, w.Body)
		}
		if w.Code != tc.status || tc.err != "" && (m["error"] != tc.err || len(m) != 1) || tc.err == "" && m["subject"] != "dev-user-2" {
			t.Errorf("%s: %d %v, want %d %q", tc.what, w.Code, m, tc.status, tc.err)
		}
	}
}

// TestStage0DevLoginExpiresAtIsPythonsISOFormat: /dev-login's expires_at
// is written as stage0's datetime.isoformat() wrote it, which leaves the
// fraction out when the time has no microseconds; orderly wrote
// ".000000" there, once in a million logins.
func TestStage0DevLoginExpiresAtIsPythonsISOFormat(t *testing.T) {
	sc := config.Stage0Compat{JWTSecret: "a-secret-for-the-test-only-0123456789", JWTIssuer: "dev-idp", JWTAudience: "dev-api", JWTAlgorithm: "HS256", JWTTTL: 8 * time.Hour}
	for _, tc := range []struct {
		now  time.Time
		want string
	}{
		{time.Date(2026, 12, 5, 2, 25, 42, 0, time.UTC), "2026-12-05T10:25:42+00:00"},
		{time.Date(2026, 12, 5, 2, 25, 42, 999, time.UTC), "2026-12-05T10:25:42+00:00"}, // under a microsecond
		{time.Date(2026, 12, 5, 2, 25, 42, 1000, time.UTC), "2026-12-05T10:25:42.000001+00:00"},
		{time.Date(2026, 12, 5, 2, 25, 42, 523353000, time.UTC), "2026-12-05T10:25:42.523353+00:00"},
	} {
		w := httptest.NewRecorder()
		(&Stage0{Now: func() time.Time { return tc.now }}).devLogin(w, httptest.NewRequest("POST", "/dev-login", nil), sc, 1<<20)
		var m map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil || w.Code != http.StatusOK || m["expires_at"] != tc.want {
			t.Errorf("dev-login at %s: %d %v (%v), want expires_at %q", tc.now.Format(time.RFC3339Nano), w.Code, m["expires_at"], err, tc.want)
		}
	}
}
