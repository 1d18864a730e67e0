package main

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// blipPostgres takes PostgreSQL away from the API under test again and
// again until stop closes (or within has passed, when positive): every
// 30 ms it cuts the connections through the proxy (cut, from
// startPGProxy), and every third time instead terminates every other
// client backend through direct, so that both a dropped socket and a
// killed session are seen. The returned channel then yields how many
// connections it cut and how many backends it terminated.
func blipPostgres(ctx context.Context, direct *pgxpool.Pool, cut func() int, stop <-chan struct{}, within time.Duration) <-chan [2]int {
	faults := make(chan [2]int)
	var over <-chan time.Time
	if within > 0 {
		over = time.After(within)
	}
	go func() {
		var cuts, terminated int
		defer func() { faults <- [2]int{cuts, terminated} }()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-over:
				return
			case <-time.After(30 * time.Millisecond):
			}
			if i%3 != 2 {
				cuts += cut()
				continue
			}
			var k int
			_ = direct.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`).Scan(&k)
			terminated += k
		}
	}()
	return faults
}
