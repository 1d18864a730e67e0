package deploy

import (
	"testing"

	"github.com/orderly-run/orderly/internal/testenv"
)

// TestMain starts PostgreSQL for the tests that run the deployments'
// role step for real (worker_role_test.go).
func TestMain(m *testing.M) { testenv.Main(m) }
