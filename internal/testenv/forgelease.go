package testenv

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/queue"
)

// ForgeLease has nc write what TestFaultsNATSFrozenSigned's forger
// writes on host's lease key (an unsigned value, a value with a bad
// signature, a release naming holder with a bad signature, a purge
// marker), in turns, every 25 ms, until the returned stop: another
// credential writing the key more often than a slow worker's round trip.
func ForgeLease(ctx context.Context, nc *nats.Conn, host, holder string) (stop func()) {
	subject := "$KV." + queue.HostsBucket + ".lease." + host
	fctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; fctx.Err() == nil; i++ {
			m := nats.NewMsg(subject)
			switch i % 4 {
			case 0:
				m.Data = []byte("forger")
			case 1:
				m.Data = []byte("forger\n" + strings.Repeat("0", 64))
			case 2:
				m.Header = nats.Header{"KV-Operation": {"DEL"}, queue.ReleasedHeader: {holder},
					queue.ReleaseSignatureHeader: {strings.Repeat("0", 64)}}
			case 3:
				m.Header = nats.Header{"KV-Operation": {"PURGE"}}
			}
			_, _ = nc.RequestMsg(m, time.Second)
			select {
			case <-fctx.Done():
			case <-time.After(25 * time.Millisecond):
			}
		}
	}()
	return func() {
		cancel()
		wg.Wait()
	}
}
