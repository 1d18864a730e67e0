package postgres

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// InsertEpoch bounds an order's insert out in PostgreSQL, which the
// intake runs to its end whether or not its client still waits: an
// insert sent in one epoch whose answer has not come by the end of the
// next has its connection closed, and is decided as one whose connection
// broke (the fence and read-back: recorded, or not and never later).
// So an insert is cut after two epochs at the most, one at the least.
// The lookup of an idempotency key an insert found used
// (idempotentRepeat) is bounded the same way: it runs on the same
// context. A variable for the tests.
var InsertEpoch = 15 * time.Second

// insertEpochsHeld, while set, stops the count of epochs: a tick ends
// none, so no insert is cut (HoldInsertEpochs).
var insertEpochsHeld atomic.Bool

// HoldInsertEpochs stops the count of every store's insert epochs until
// release is called; an insert out meanwhile is cut two epochs after the
// release at the most. For the tests that stop (SIGSTOP) a backend with
// an insert in it: they must find it before the watch cuts it, which a
// loaded machine's scheduler made a race against two short epochs.
func HoldInsertEpochs() (release func()) {
	insertEpochsHeld.Store(true)
	return func() { insertEpochsHeld.Store(false) }
}

// insertWatch is the bound on the inserts out, and on the lookups of
// the keys they found used: one timer for them all, running only while
// one is out, instead of a deadline per insert (a context that can end
// costs every order a timer and pgx's watch of the context: ten
// allocations an order, docs/decisions.md).
type insertWatch struct {
	mu     sync.Mutex
	epoch  uint64
	out    []outInsert
	timer  *time.Timer   // runs while out is not empty
	period time.Duration // InsertEpoch when the timer was last started
}

// outInsert is one insert's connection, the epoch it was sent in, and
// whether the watch has closed it.
type outInsert struct {
	conn  net.Conn
	epoch uint64
	cut   bool
}

// sent records conn as carrying an insert from now on.
func (w *insertWatch) sent(conn net.Conn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.out = append(w.out, outInsert{conn: conn, epoch: w.epoch})
	if len(w.out) > 1 {
		return
	}
	w.period = InsertEpoch
	if w.timer == nil {
		w.timer = time.AfterFunc(w.period, w.tick)
	} else {
		w.timer.Reset(w.period)
	}
}

// done records that conn's insert has its answer, and reports whether
// the watch cut it meanwhile: then the connection must not go back to
// the pool.
func (w *insertWatch) done(conn net.Conn) (cut bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, o := range w.out {
		if o.conn == conn {
			last := len(w.out) - 1
			w.out[i] = w.out[last]
			w.out[last] = outInsert{}
			w.out = w.out[:last]
			return o.cut
		}
	}
	return false
}

// tick ends an epoch: the connections of the inserts sent before the
// last one began are closed, which ends their wait with a lost
// connection's error.
func (w *insertWatch) tick() {
	var cut []net.Conn
	w.mu.Lock()
	if !insertEpochsHeld.Load() {
		w.epoch++
		for i := range w.out {
			if o := &w.out[i]; !o.cut && w.epoch-o.epoch >= 2 {
				o.cut = true
				cut = append(cut, o.conn)
			}
		}
	}
	if len(w.out) > 0 {
		w.timer.Reset(w.period)
	}
	w.mu.Unlock()
	for _, c := range cut {
		_ = c.Close()
	}
}

// release gives conn back to the pool after its insert, or closes it for
// good when the watch cut it (it may have been cut after its answer came,
// with pgx not knowing).
func (w *insertWatch) release(conn *pgxpool.Conn, nc net.Conn) {
	if !w.done(nc) {
		conn.Release()
		return
	}
	_ = conn.Hijack().Close(context.Background())
}
