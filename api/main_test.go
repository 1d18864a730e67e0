package api_test

import (
	"os"
	"testing"

	"github.com/orderly-run/orderly/internal/testenv"
)

func TestMain(m *testing.M) {
	code := testenv.Run(m)
	sharedBrowser.close()
	os.Exit(code)
}
