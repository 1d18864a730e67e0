package queue_test

import (
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestReplicasRefusedOnSingleServer checks that asking a standalone server
// for three copies fails before anything is created, with an error that
// names the setting to change, and that one copy is still fine there.
func TestReplicasRefusedOnSingleServer(t *testing.T) {
	url := testenv.NATS(t)
	nc, err := queue.Connect(url, "replicas-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	_, err = queue.New(testenv.Context(t), nc, queue.Options{Replicas: 3})
	if err == nil {
		t.Fatal("R3 on a single server was accepted")
	}
	if !strings.Contains(err.Error(), "nats.replicas is 3") || !strings.Contains(err.Error(), "not part of a cluster") {
		t.Fatalf("error does not explain the replica count: %v", err)
	}
	if _, err := queue.New(testenv.Context(t), nc, queue.Options{Replicas: 1}); err != nil {
		t.Fatalf("R1 on the same server: %v", err)
	}
}
