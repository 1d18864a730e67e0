package queue

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Error codes of the JetStream API that mean "not enough servers for that
// many replicas" (nats-server's errors.json).
const (
	errCodeInsufficientResources jetstream.ErrorCode = 10023 // a cluster with fewer servers than replicas
	errCodeNoSuitablePeers       jetstream.ErrorCode = 10005 // no peers to place the replicas on
	errCodeReplicasNotSupported  jetstream.ErrorCode = 10074 // replicas > 1 on a server that is not clustered
)

// checkReplicas refuses a replica count a single server cannot keep before
// anything is created: nats-server answers R3 on a standalone server with
// "replicas > 1 not supported in non-clustered mode", which names neither
// orderly's setting nor the fix. A server reports its cluster's name in the
// INFO it sends on connect; a standalone one reports none.
func checkReplicas(nc *nats.Conn, replicas int) error {
	if replicas <= 1 || nc.ConnectedClusterName() != "" {
		return nil
	}
	return fmt.Errorf("nats.replicas is %d, but the NATS server %s is not part of a cluster and keeps one copy: "+
		"set nats.replicas: 1, or connect to a JetStream cluster of at least %d servers",
		replicas, serverURL(nc), replicas)
}

// replicasError explains a stream or bucket refused because the cluster has
// fewer servers (with JetStream, online) than nats.replicas asks for; other
// errors pass through unchanged.
func replicasError(err error, replicas int) error {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return err
	}
	switch apiErr.ErrorCode {
	case errCodeInsufficientResources, errCodeNoSuitablePeers, errCodeReplicasNotSupported:
		if replicas > 1 {
			return fmt.Errorf("nats.replicas is %d, but the NATS cluster cannot place that many copies "+
				"(fewer than %d JetStream servers online?): %w", replicas, replicas, err)
		}
	}
	return err
}
