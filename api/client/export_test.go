package client

import "time"

// SetResponseHeaderTimeout sets the answer timeout of clients made from
// now on, for a test; the returned func restores it.
func SetResponseHeaderTimeout(d time.Duration) func() {
	old := responseHeaderTimeout
	responseHeaderTimeout = d
	return func() { responseHeaderTimeout = old }
}
