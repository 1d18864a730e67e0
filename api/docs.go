package api

import (
	"bytes"
	"embed"
	"io/fs"
	"net/http"
	"path"

	"github.com/go-chi/chi/v5"
)

// openapiSpec is the API's description, the one source: served at
// /openapi.yaml, browsed at /docs/, and checked against the router and
// real responses by the tests.
//
//go:embed openapi.yaml
var openapiSpec []byte

// OpenAPISpec returns a copy of the OpenAPI 3.1 document (YAML).
func OpenAPISpec() []byte { return bytes.Clone(openapiSpec) }

// docsFiles is the offline explorer: swagger-ui-dist's files and ours
// (web/docs/README.md says which and how to update them).
//
//go:embed web/docs
var docsFiles embed.FS

// docsCSP is the explorer's Content-Security-Policy: the web UI's, with
// inline styles, which swagger-ui sets on its elements.
const docsCSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
	"font-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// handleOpenAPI is GET /openapi.yaml.
func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(openapiSpec)
}

// handleDocsRedirect is GET /docs: the explorer's relative links need the
// trailing slash. The target is relative so a proxy's prefix is kept.
func (s *Server) handleDocsRedirect(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Location", "docs/")
	w.WriteHeader(http.StatusMovedPermanently)
}

// handleDocsIndex is GET /docs/: the explorer's page.
func (s *Server) handleDocsIndex(w http.ResponseWriter, r *http.Request) {
	s.serveDocsFile(w, r, "index.html")
}

// handleDocsFile is GET /docs/{file}: one of the explorer's files, all of
// which sit in one directory. stage0's own addresses of its explorer and
// its spec (`/docs/explorer.html`, `/docs/openapi.yaml`, in its README and
// its users' bookmarks) answer orderly's: they sit in the same directory,
// so the page's relative links work from either address.
func (s *Server) handleDocsFile(w http.ResponseWriter, r *http.Request) {
	switch file := chi.URLParam(r, "file"); file {
	case "explorer.html":
		s.serveDocsFile(w, r, "index.html")
	case "openapi.yaml":
		s.handleOpenAPI(w, r)
	default:
		s.serveDocsFile(w, r, file)
	}
}

// serveDocsFile writes one embedded file, or the JSON 404 every other
// unknown path gets.
func (s *Server) serveDocsFile(w http.ResponseWriter, r *http.Request, name string) {
	name = path.Join("web/docs", path.Clean("/"+name))
	st, err := fs.Stat(docsFiles, name)
	if err != nil || st.IsDir() {
		s.writeError(w, r, notFound("no such file"))
		return
	}
	b, err := docsFiles.ReadFile(name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// The page is ours and static; it may not be framed by another site,
	// and it runs only this server's scripts and talks only to it: a
	// person types a token into it.
	w.Header().Set("Content-Security-Policy", docsCSP)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.ServeContent(w, r, path.Base(name), st.ModTime(), bytes.NewReader(b))
}
