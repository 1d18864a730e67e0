package main

import (
	"fmt"
	"log/slog"
	"net"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

// listenAPI is the API's listening socket: the one systemd passed in
// (LISTEN_FDS, deploy/systemd/orderly-api.socket) when the process was
// socket-activated, so an unprivileged DynamicUser service can serve a
// port it could not bind itself and systemd holds connections while it
// restarts; otherwise a socket of its own on addr.
func listenAPI(addr string, logger *slog.Logger) (net.Listener, error) {
	lns, err := activation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("take the sockets systemd passed (LISTEN_FDS): %w", err)
	}
	var got []net.Listener
	for _, ln := range lns {
		if ln != nil { // a passed descriptor that is not a stream socket
			got = append(got, ln)
		}
	}
	switch len(got) {
	case 0:
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", addr, err)
		}
		return ln, nil
	case 1:
		logger.Info("using the socket passed by systemd", "addr", got[0].Addr().String(), "listen_ignored", addr)
		return got[0], nil
	}
	for _, ln := range got {
		_ = ln.Close()
	}
	return nil, fmt.Errorf("systemd passed %d listening sockets; the API serves exactly one", len(got))
}

// The sd_notify states orderly sends.
const (
	sdReady    = daemon.SdNotifyReady
	sdStopping = daemon.SdNotifyStopping
)

// notifySystemd tells a Type=notify unit's manager about a state change
// (sdReady once the service serves, sdStopping when it
// begins to stop). Outside systemd (no NOTIFY_SOCKET) it does nothing.
func notifySystemd(state string, logger interface{ Error(string, ...any) }) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		logger.Error("notify systemd", "state", state, "error", err)
	}
}
