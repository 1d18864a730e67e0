package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// webhookPeer is adnanh's webhook (Debian package `webhook`, installed for
// the bench by scripts/ensure-webhook.sh) with one hook that runs /bin/true
// and answers only when it exited (include-command-output-in-response): the
// same work as a synchronous orderly order, with no durability, no queue and
// no audit. It is the yardstick every rate is divided by.
type webhookPeer struct {
	cmd  *exec.Cmd
	dir  string
	url  string
	done chan struct{}
}

// findWebhook is webhook on PATH, or bin/webhook; "" when neither exists.
func findWebhook() string {
	if p, err := exec.LookPath("webhook"); err == nil {
		return p
	}
	if p, err := filepath.Abs("bin/webhook"); err == nil && fileExists(p) {
		return p
	}
	return ""
}

func startWebhook(ctx context.Context, bin string) (*webhookPeer, error) {
	dir, err := os.MkdirTemp("", "orderly-bench-webhook-")
	if err != nil {
		return nil, err
	}
	hooks := filepath.Join(dir, "hooks.json")
	const conf = `[{"id": "true", "execute-command": "/bin/true", "include-command-output-in-response": true, "http-methods": ["POST"]}]`
	if err := os.WriteFile(hooks, []byte(conf), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p := &webhookPeer{dir: dir, url: fmt.Sprintf("http://127.0.0.1:%d/hooks/true", port), done: make(chan struct{})}
	p.cmd = exec.Command(bin, "-hooks", hooks, "-ip", "127.0.0.1", "-port", strconv.Itoa(port))
	p.cmd.Stdout, p.cmd.Stderr = io.Discard, io.Discard // it logs every request
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start webhook: %w", err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := p.request(ctx, http.DefaultClient, 0)
		if err == nil {
			return p, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.stop()
			return nil, fmt.Errorf("webhook did not answer within 10s: %w", err)
		}
		select {
		case <-p.done:
			os.RemoveAll(dir)
			return nil, errors.New("webhook exited at start")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// request is one POST to the hook, which must answer 200.
func (p *webhookPeer) request(ctx context.Context, hc *http.Client, _ int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("webhook answered %d", resp.StatusCode)
	}
	return nil
}

func (p *webhookPeer) cpu() cpuSample { return pidCPU(p.cmd.Process.Pid) }

func (p *webhookPeer) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	os.RemoveAll(p.dir)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
