package main

import (
	"log/slog"
	"testing"

	"github.com/orderly-run/orderly/internal/testenv"
)

func testLogger(t testing.TB) *slog.Logger { return testenv.Logger(t) }
