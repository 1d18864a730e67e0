//go:build race

package worker

// RaceEnabled says the test binary was built with -race, under which
// sync.Pool drops a quarter of what is put back and allocation counts
// are not the product's. Exported for the worker_test package's counts.
const RaceEnabled = true
