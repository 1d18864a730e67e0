package main

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
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
	return []*cobra.Command{
		a.submitCommand(), a.getCommand(), a.logsCommand(), a.lsCommand(),
		a.cancelCommand(), a.hostsCommand(),
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
func (a *app) client(cmd *cobra.Command, f *connFlags) (*apiClient, error) {
	base := firstNonEmpty(flagValue(cmd, "url", f.url), a.getenv("ORDERLY_URL"), defaultClientURL)
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("API URL %q is not an http:// or https:// URL", base)
	}
	token, err := a.token(cmd, f)
	if err != nil {
		return nil, err
	}
	return newAPIClient(strings.TrimRight(base, "/"), token, a.getenv), nil
}

// token finds the bearer token: --token, ORDERLY_TOKEN, then the admin
// token file of a local serve.
func (a *app) token(cmd *cobra.Command, f *connFlags) (string, error) {
	if t := firstNonEmpty(flagValue(cmd, "token", f.token), a.getenv("ORDERLY_TOKEN")); t != "" {
		return strings.TrimSpace(t), nil
	}
	dir := firstNonEmpty(flagValue(cmd, "data-dir", f.dataDir), a.getenv("ORDERLY_DATA_DIR"), defaultDataDir)
	path := filepath.Join(dir, adminTokenFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("no API token: pass --token, set ORDERLY_TOKEN, or point --data-dir (ORDERLY_DATA_DIR) at the data dir of `orderly serve` (no %s)", path)
	}
	if err != nil {
		return "", fmt.Errorf("read API token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("API token file %s is empty", path)
	}
	return t, nil
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
