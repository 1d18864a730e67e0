//go:build race

package policy

// raceEnabled says the test binary was built with -race, under which
// sync.Pool drops a quarter of what is put back (regexp's matchers
// among it) and allocation counts are not the product's.
const raceEnabled = true
