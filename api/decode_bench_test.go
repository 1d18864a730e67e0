package api

import "testing"

// BenchmarkDecodeSubmitRequest: allocations of the strict decode of the
// body every submission pays (checkJSON's walk, then the typed decode).
func BenchmarkDecodeSubmitRequest(b *testing.B) {
	body := []byte(`{"host":"bench","command":"true","args":["-a","b"],"env":{"A":"1"},"timeout_seconds":30}`)
	b.ReportAllocs()
	for b.Loop() {
		var req SubmitRequest
		if err := decodeBytes(body, &req); err != nil {
			b.Fatal(err)
		}
	}
}
