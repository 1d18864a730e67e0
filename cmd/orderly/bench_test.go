package main

import (
	"bytes"
	"io"
	"net/http"
	"testing"
)

// BenchmarkSubmit measures the API's submit path (202, no wait) with
// concurrent clients against the in-process stack (test PostgreSQL, fsync
// off: CPU, not disk). make bench measures the production configuration.
func BenchmarkSubmit(b *testing.B) {
	s := newStack(b)
	body := []byte(`{"host":"nowhere","command":"true","args":["-x"]}`)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("POST", s.url+"/v1/orders", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+s.token)
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}
