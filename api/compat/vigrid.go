package compat

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
)

// Vigrid is the Vigrid Shell API's /api/v1 (docs/compat.md). Every path but
// exactly /health passes, in the original's order, the integrity check,
// the network ACL, the bearer scheme and the token; only then is it routed.
// Tokens are orderly principals, the token's rules orderly policy, and each
// execute an ordinary order on compat.vigrid.host, whose worker runs the
// host's queue one order at a time like Vigrid's single FIFO.
type Vigrid struct {
	Deps
	// PID is the process id of a running order's attempt, for kill's
	// answer; 0 when unknown.
	PID func(ctx context.Context, id uuid.UUID, attempt int) int

	mu   sync.Mutex
	meta map[uuid.UUID]vigridMeta // what Vigrid's queue shows and orders do not keep
}

// vigridMeta is what /queue shows of an order that orderly does not store.
type vigridMeta struct {
	clientIP    string
	synchronous bool
	at          time.Time
}

// Vigrid's service identity, as its clients see it.
const (
	vigridService = "vigrid-shell-api"
	vigridVersion = "1.0.0"
)

// vigridTime is Vigrid's timestamp: UTC with microseconds and a Z.
func vigridTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000Z") }

// vigridRequest is one request inside the pipeline.
type vigridRequest struct {
	w   http.ResponseWriter
	r   *http.Request
	cfg config.Config
	p   auth.Principal
	ip  string
}

func (v *Vigrid) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cfg := v.Config()
	base := strings.TrimSuffix(cfg.Compat.Vigrid.Prefix, "/")
	// Vigrid's server (Werkzeug's) read a path's leading slashes as one
	// and served it; doubled slashes further on are Werkzeug's routing's
	// (a redirect, below).
	path := "/" + strings.TrimLeft(r.URL.Path, "/")
	merged := api.MergeSlashes(path)
	rel := strings.TrimPrefix(merged, base)
	if path == base+"/health" {
		if ip, ok := clientAddr(v.ACL(), r); !ok {
			auditACL(v.Orders, r, ip, "vigrid")
			vigridError(w, http.StatusForbidden, "Access denied")
			return
		}
		if r.Method == http.MethodOptions {
			flaskOptions(w, http.MethodGet)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", flaskAllow(http.MethodGet))
			vigridError(w, http.StatusMethodNotAllowed, "Method not allowed")
			return
		}
		vigridHealth(w)
		return
	}
	// The tamper check must not lock out the endpoint that clears it
	// (docs/compat.md): /reload skips it and reloads.
	if cfg.Compat.Vigrid.IntegrityCheck && (rel != "/reload" || merged != path) && v.Drift != nil && v.Drift() {
		vigridError(w, http.StatusServiceUnavailable, "Configuration integrity check failed. Restart the service.")
		return
	}
	ip, ok := clientAddr(v.ACL(), r)
	if !ok {
		auditACL(v.Orders, r, ip, "vigrid")
		vigridError(w, http.StatusForbidden, "Access denied")
		return
	}
	unauthenticated := func(msg string) {
		v.Orders.AuditRefusal(r.Context(), r, "", ip, "vigrid", http.StatusUnauthorized, order.Errorf(order.CodeUnauthenticated, "%s", msg))
		vigridError(w, http.StatusUnauthorized, msg)
	}
	h := r.Header.Get("Authorization")
	if !strings.HasPrefix(h, "Bearer ") {
		unauthenticated("Authentication required. Use 'Authorization: Bearer <token>'.")
		return
	}
	// Vigrid compared header[7:] with each secret as it was: a token with
	// spaces around it matches none (Authenticate would trim them).
	tok := h[len("Bearer "):]
	if tok == "" || strings.Trim(tok, " \t") != tok {
		unauthenticated("Invalid authentication token")
		return
	}
	p, err := v.Auth().Authenticate(h)
	if err != nil {
		unauthenticated("Invalid authentication token")
		return
	}
	if err := v.Orders.LimitPrincipal(w, r, p.Name, ip, "vigrid"); err != nil {
		v.Refuse(w, http.StatusTooManyRequests, refusalText(err))
		return
	}
	vr := &vigridRequest{w: w, r: r, cfg: cfg, p: p, ip: ip}
	routes := map[string]struct {
		method string
		serve  func(*vigridRequest)
	}{
		// Only its doubled-slash paths get here: a redirect.
		"/health":  {http.MethodGet, func(vr *vigridRequest) { vigridHealth(vr.w) }},
		"/status":  {http.MethodGet, v.status},
		"/execute": {http.MethodPost, v.execute},
		"/queue":   {http.MethodGet, v.queue},
		"/kill":    {http.MethodPost, v.kill},
		"/reload":  {http.MethodPost, v.reload},
	}
	// Werkzeug matched a path with doubled slashes once merged, and
	// answered a redirect to the merged one (after Vigrid's checks, which
	// ran before routing).
	rt, ok := routes[rel]
	switch {
	case !ok:
		vigridError(w, http.StatusNotFound, "Endpoint not found")
	case !flaskMethodOK(r.Method, rt.method):
		w.Header().Set("Allow", flaskAllow(rt.method))
		vigridError(w, http.StatusMethodNotAllowed, "Method not allowed")
	case merged != path:
		werkzeugRedirect(w, r, merged)
	case r.Method == http.MethodOptions:
		flaskOptions(w, rt.method)
	default:
		rt.serve(vr)
	}
}

// vigridHealth is GET /health's answer.
func vigridHealth(w http.ResponseWriter) {
	vigridJSON(w, http.StatusOK, map[string]any{"status": "ok", "service": vigridService, "version": vigridVersion,
		"timestamp": vigridTime(time.Now())})
}

// reload is POST /reload: load the config file again. Only for a
// principal with the admin role, as POST /v1/admin/reload: every Vigrid
// token could reload, which let any client apply an edited file.
func (v *Vigrid) reload(vr *vigridRequest) {
	if !vr.p.HasRole("admin") {
		v.Orders.AuditRefusal(vr.r.Context(), vr.r, vr.p.Name, vr.ip, "vigrid", http.StatusForbidden,
			order.Errorf(order.CodeForbidden, "reloading the configuration needs the admin role"))
		vigridError(vr.w, http.StatusForbidden, "Reloading the configuration needs the admin role")
		return
	}
	if err := v.Reload(vr.r.Context(), vr.p.Name); err != nil {
		vigridError(vr.w, http.StatusInternalServerError, "Reload failed: "+err.Error())
		return
	}
	vigridJSON(vr.w, http.StatusOK, map[string]any{"status": "ok", "message": "Configuration reloaded successfully"})
}

// remember keeps what /queue shows of an order this replica accepted.
func (v *Vigrid) remember(id uuid.UUID, m vigridMeta) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.meta == nil {
		v.meta = map[uuid.UUID]vigridMeta{}
	}
	if len(v.meta) > 10000 {
		for k, old := range v.meta {
			if time.Since(old.at) > time.Hour {
				delete(v.meta, k)
			}
		}
	}
	v.meta[id] = m
}

func (v *Vigrid) recall(id uuid.UUID) vigridMeta {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.meta[id]
}

func (v *Vigrid) forget(id uuid.UUID) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.meta, id)
}

// Refuse writes a refusal in Vigrid's {"status": "error", "message": msg}
// (api.CompatRefuser, for limits.rate_per_ip).
func (v *Vigrid) Refuse(w http.ResponseWriter, status int, msg string) { vigridError(w, status, msg) }

// Source is the surface's name on record (api.CompatRefuser).
func (v *Vigrid) Source() string { return "vigrid" }

// InternalError is Vigrid's 500 (api.CompatRefuser).
func (v *Vigrid) InternalError(w http.ResponseWriter) {
	vigridError(w, http.StatusInternalServerError, "Internal server error")
}

func vigridError(w http.ResponseWriter, status int, msg string) {
	vigridJSON(w, status, map[string]any{"status": "error", "message": msg})
}

func vigridJSON(w http.ResponseWriter, status int, v any) { writePyJSON(w, status, v) }
