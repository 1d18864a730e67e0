package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/orderly-run/orderly/api/client"
)

// Defaults of the client's connection settings; they match what a local
// `orderly serve` uses.
const (
	defaultClientURL = "http://127.0.0.1:8080"
	defaultDataDir   = "./data"
	adminTokenFile   = "admin.token"
)

// clientCommands are the commands that talk to a running API.
func (a *app) clientCommands() []*cobra.Command {
	cmds := []*cobra.Command{
		a.submitCommand(), a.getCommand(), a.logsCommand(), a.lsCommand(),
		a.cancelCommand(), a.hostsCommand(),
	}
	for _, c := range cmds {
		hintUnreachable(c)
	}
	return cmds
}

// hintUnreachable makes the command's "cannot reach the API" error say
// what to check, which the client package cannot know. An API that
// answered, over TLS the client does not trust or in plain HTTP to an
// https:// URL, is running: asking whether it is sent people to look
// at the wrong end.
func hintUnreachable(cmd *cobra.Command) {
	run := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		err := run(cmd, args)
		var te *client.TransportError
		var cv *tls.CertificateVerificationError
		switch {
		case !errors.As(err, &te):
		case errors.As(err, &cv):
			return fmt.Errorf("%w (%s)", err, certificateFix(err, "the API's certificate", "--url or ORDERLY_URL", "set SSL_CERT_FILE to the PEM file of its CA"))
		case errors.Is(err, http.ErrSchemeMismatch):
			return fmt.Errorf("%w (the API speaks plain HTTP: use http:// in --url or ORDERLY_URL)", err)
		default:
			return fmt.Errorf("%w (is it running? set --url or ORDERLY_URL)", err)
		}
		return err
	}
}

// connFlags are the connection flags every client command takes. Flags
// win over ORDERLY_URL / ORDERLY_TOKEN / ORDERLY_DATA_DIR, which win over
// the defaults; the token falls back to the admin token file that a local
// `orderly serve` writes.
type connFlags struct {
	url, token, dataDir string
}

func (f *connFlags) bind(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.url, "url", "", "API base `URL` (env ORDERLY_URL, default "+defaultClientURL+")")
	fs.StringVar(&f.token, "token", "", "API bearer `token` (env ORDERLY_TOKEN, default: "+adminTokenFile+" in the data dir)")
	fs.StringVar(&f.dataDir, "data-dir", "", "`dir` of a local orderly serve, whose "+adminTokenFile+" is the token when none is given (env ORDERLY_DATA_DIR, default "+defaultDataDir+")")
}

// getenv reads a variable from the environment run() was given; the last
// assignment wins, as in a shell.
func (a *app) getenv(name string) string {
	v := ""
	for _, kv := range a.environ {
		if k, val, ok := strings.Cut(kv, "="); ok && k == name {
			v = val
		}
	}
	return v
}

// client resolves the connection settings and returns an API client.
func (a *app) client(cmd *cobra.Command, f *connFlags) (*client.Client, error) {
	base := firstNonEmpty(flagValue(cmd, "url", f.url), a.getenv("ORDERLY_URL"), defaultClientURL)
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("API URL %q is not an http:// or https:// URL", base)
	}
	token, err := a.token(cmd, f)
	if err != nil {
		return nil, err
	}
	return client.New(strings.TrimRight(base, "/"), token,
		client.WithHTTPClient(newHTTPClient(a.getenv)), client.WithUserAgent("orderly-cli/"+binaryVersion()))
}

// token finds the bearer token: --token, ORDERLY_TOKEN, then the admin
// token file of a local serve.
func (a *app) token(cmd *cobra.Command, f *connFlags) (string, error) {
	if t := firstNonEmpty(flagValue(cmd, "token", f.token), a.getenv("ORDERLY_TOKEN")); t != "" {
		return strings.TrimSpace(t), nil
	}
	named := firstNonEmpty(flagValue(cmd, "data-dir", f.dataDir), a.getenv("ORDERLY_DATA_DIR"))
	dir := firstNonEmpty(named, defaultDataDir)
	path := filepath.Join(dir, adminTokenFile)
	flags := os.O_RDONLY
	if named == "" {
		// Not through a symbolic link, nor blocking on a FIFO: see
		// ownFile.
		flags |= syscall.O_NOFOLLOW | syscall.O_NONBLOCK
	}
	fh, err := os.OpenFile(path, flags, 0)
	if named == "" && errors.Is(err, syscall.ELOOP) {
		return "", fmt.Errorf("API token file %s is a symbolic link: name the data dir (--data-dir, ORDERLY_DATA_DIR) to use it, or pass --token", path)
	}
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("no API token: pass --token, set ORDERLY_TOKEN, or point --data-dir (ORDERLY_DATA_DIR) at the data dir of `orderly serve` (no %s)", path)
	}
	if err != nil {
		return "", fmt.Errorf("read API token: %w", err)
	}
	defer fh.Close()
	if named == "" {
		// ./data is wherever the command is typed: in /tmp, or another
		// user's directory, its admin.token is whoever put it there, and
		// every request, with the order's command and its output, would
		// go under that principal. Taken only when it is the reader's
		// own file (as git takes only a repository of its own).
		if err := ownFile(fh); err != nil {
			return "", fmt.Errorf("API token file %s: %w: name the data dir (--data-dir, ORDERLY_DATA_DIR) to use it, or pass --token", path, err)
		}
	}
	b, err := io.ReadAll(fh)
	if err != nil {
		return "", fmt.Errorf("read API token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("API token file %s is empty", path)
	}
	return t, nil
}

// ownFile refuses a file that belongs to another user than the one
// running the command (root's files are taken: only root can make them),
// one that is not a regular file, and one with another name besides: in
// a directory another user controls (/tmp/data), that user's symbolic
// or hard link to a one-line file of the reader's (a git credential, a
// pgpass line) is the reader's own file, and its line went as the bearer
// token to the default URL, which that user may listen on. (The caller
// opens it without following a symbolic link.)
func ownFile(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("not a regular file (%s)", st.Mode().Type())
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if uid := os.Geteuid(); int(sys.Uid) != uid && sys.Uid != 0 {
		return fmt.Errorf("owned by uid %d, not by you (uid %d)", sys.Uid, uid)
	}
	if sys.Nlink != 1 {
		return fmt.Errorf("a hard link (%d names), maybe to a file of yours of another use", sys.Nlink)
	}
	return nil
}

// flagValue returns the flag's value when it was set on the command line.
func flagValue(cmd *cobra.Command, name, v string) string {
	if cmd.Flags().Changed(name) {
		return v
	}
	return ""
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
