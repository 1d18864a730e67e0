package api_test

import (
	"testing"

	"github.com/orderly-run/orderly/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
