package main

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAPISocketActivated runs `orderly api` the way orderly-api.socket
// does: systemd-socket-activate holds the port and passes it through
// LISTEN_FDS, and the API's own listen address is one it cannot bind, so
// an answer proves it served the passed socket. Readiness arrives as
// READY=1 on NOTIFY_SOCKET, as a Type=notify unit expects.
func TestAPISocketActivated(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Fatal("systemd-socket-activate not found: install the Debian systemd package (scripts/ensure-systemd.sh)")
	}
	s := newStack(t)
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))

	notifyPath := filepath.Join(t.TempDir(), "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()

	cmd := exec.Command(activate, "-l", addr,
		"-E", "ORDERLY_DATABASE_URL="+s.dsn, "-E", "ORDERLY_NATS__URL="+s.natsURL,
		"-E", "NOTIFY_SOCKET="+notifyPath, "-E", "PATH=/usr/bin:/bin",
		orderlyBin, "api", "--listen", "192.0.2.1:1")
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() })

	// systemd-socket-activate binds the port, then starts the service on
	// the first connection.
	client := &http.Client{Timeout: 60 * time.Second}
	var resp *http.Response
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(30 * time.Second); ; <-tick.C {
		if resp, err = client.Get("http://" + addr + "/healthz"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /healthz through the activated socket: %v", err)
		}
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz = %d", resp.StatusCode)
	}

	buf := make([]byte, 4096)
	_ = notify.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		n, err := notify.Read(buf)
		if err != nil {
			t.Fatalf("no READY=1 on NOTIFY_SOCKET: %v", err)
		}
		if strings.Contains(string(buf[:n]), "READY=1") {
			break
		}
	}

	// A stop says STOPPING=1 before the process ends.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = notify.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		n, err := notify.Read(buf)
		if err != nil {
			t.Fatalf("no STOPPING=1 on NOTIFY_SOCKET: %v", err)
		}
		if strings.Contains(string(buf[:n]), "STOPPING=1") {
			break
		}
	}
}
