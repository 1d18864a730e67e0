package deploy

import (
	"os"
	"testing"

	"github.com/orderly-run/orderly/internal/testenv"
)

// TestMain starts PostgreSQL for the tests that run the deployments'
// role step for real (worker_role_test.go).
// It removes the orderly that orderlyBin built.
func TestMain(m *testing.M) {
	code := testenv.Run(m)
	if orderlyBinDir != "" {
		os.RemoveAll(orderlyBinDir)
	}
	os.Exit(code)
}
