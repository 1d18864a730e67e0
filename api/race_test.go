//go:build race

package api

// RaceEnabled says the test binary was built with -race, under which
// sync.Pool drops a quarter of what is put back (the encode buffers, the
// wait timers, pgx's and nats.go's own pools) and allocation counts are
// not the product's. Exported for the api_test package's counts.
const RaceEnabled = true
