package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderly-run/orderly/internal/order"
)

// Claim moves a queued order to running (attempt+1) and records the
// "started" event, in one statement committed before anything executes
// (DESIGN §2.2). When the order is not queued it returns claimed=false and
// the order as it is, so the caller can tell a redelivery of a running order
// (interrupted) from a finished one (ack only); a queued order whose
// deadline passed comes back unclaimed too, for the caller to expire. When
// worker does not own the order's host it fails with ErrNotOwner; when
// the API process waiting for the order is gone, with ErrWaiterGone.
func (s *Store) Claim(ctx context.Context, id uuid.UUID, worker string, seq uint64) (o *order.Order, claimed bool, err error) {
	o, err = s.claimOnce(ctx, claimOrder, id, worker, seq)
	return s.claimed(ctx, id, worker, o, err)
}

// claimForms is a claim statement in its two forms: alone, taking the
// order's row lock only if no other session holds it (claimFree), and
// after the row lock of claimLockSQL (claimLocked).
type claimForms struct{ alone, locked string }

// The claim statements of Claim and ClaimRan, in both forms.
var (
	claimOrder = claimForms{alone: withClaimFree(claimSQL), locked: claimSQL}
	claimRan   = claimForms{alone: withClaimFree(claimHead + claimTail), locked: claimHead + claimTail}
)

// claimOnce runs a claim as one statement, its alone form, when the
// order's row is free, which it nearly always is: one statement and one
// plain query where claimLocked sends two in a batch (docs/benchmarks.md,
// "the thirty-first round"). A row another session holds makes the alone
// form claim nothing without waiting (claimFree), and so does an order
// that is not to be claimed (not queued, expired, a host not worker's, a
// waiter gone): claimLocked then judges it again after any wait for the
// lock, as every claim did before.
func (s *Store) claimOnce(ctx context.Context, forms claimForms, id uuid.UUID, worker string, seq uint64) (*order.Order, error) {
	o, err := scanOrder(s.pool.QueryRow(ctx, forms.alone, id, worker, int64(seq)))
	if err != pgx.ErrNoRows {
		return o, err
	}
	return s.claimLocked(ctx, forms.locked, id, worker, seq)
}

// claimFree is what a claim's alone form asks beyond the locked form's:
// the order's row lock taken at once, or not at all (SKIP LOCKED). The
// fence (the host's owner, read from hosts) is read on the statement's
// snapshot, taken when the statement began: with the lock taken without
// a wait, nothing stands between that snapshot and the claim's write but
// the statement's own work, as between claimLocked's second snapshot and
// its write. A claim that would have waited for the lock (the reason for
// claimLockSQL) claims nothing instead, and goes the locked way. FOR NO
// KEY UPDATE is the lock the UPDATE takes anyway, so the UPDATE never
// waits for the row once this holds: its own transaction has it.
const claimFree = `
		AND EXISTS (SELECT 1 FROM orders l WHERE l.id = $1 FOR NO KEY UPDATE SKIP LOCKED)`

// withClaimFree is claim statement sql (claimHead first) with claimFree
// among what its UPDATE asks of the order.
func withClaimFree(sql string) string {
	const fence = `h.owner = $2)`
	i := strings.Index(sql, fence)
	if i < 0 || !strings.HasPrefix(sql, claimHead) {
		panic("withClaimFree: not a claim statement")
	}
	i += len(fence)
	return sql[:i] + claimFree + sql[i:]
}

// claimLocked runs a claim statement (claimSQL, or claimHead+claimTail)
// after the row lock of claimLockSQL (claimOnce, when the statement's
// alone form claimed nothing), in one transaction and one round
// trip, as the single statement it was. The transaction is the batch's
// own: pgx sends a batch with one Sync at its end (one Query in the
// simple protocol), and PostgreSQL runs what comes before a Sync as one
// implicit transaction, committed at the Sync; an error ends it rolled
// back. A BEGIN and a COMMIT around the two were two statements more per
// claim (docs/benchmarks.md, "PostgreSQL's statements per sync order").
// Each statement still takes its own snapshot (read committed), the
// claim's after the lock.
func (s *Store) claimLocked(ctx context.Context, sql string, id uuid.UUID, worker string, seq uint64) (o *order.Order, err error) {
	b := &pgx.Batch{}
	b.Queue(claimLockSQL, id)
	b.Queue(sql, id, worker, int64(seq))
	br := s.pool.SendBatch(ctx, b)
	if _, err = br.Exec(); err == nil {
		o, err = scanOrder(br.QueryRow())
	}
	// The commit's error, if any, comes with the Sync's answer, which
	// Close reads.
	if cerr := br.Close(); cerr != nil && (err == nil || err == pgx.ErrNoRows) {
		err = cerr
	}
	return o, err
}

// claimLockSQL takes the row lock of the order a claim is about to
// move, in the claim's transaction and as a statement before it, so that
// the claim's fence (the host's owner, read from hosts) is judged on a
// snapshot taken once any wait for that lock is over. In one statement
// the fence was read on the snapshot the statement began with: a claim
// that waited behind another session's lock on the order's row (a
// SELECT … FOR UPDATE left open, an auditor's or an operator's) while
// its worker lost the host (SIGKILLed, frozen past its lease) committed
// once the lock went, after the successor's takeover: the order was
// running under a worker that no longer owned its host, and the
// successor, whose own claim had queued behind it, recorded it
// interrupted without its having run (TestFaultsPostgresRowLocked/
// row_holder_killed); a frozen worker thawed with that answer could
// have started it beside the successor's later orders. A wait for a
// lock on the whole table needs none of this: the statement's snapshot
// is taken once its table locks are granted. FOR NO KEY UPDATE is the
// lock the claim's UPDATE takes anyway.
const claimLockSQL = `SELECT 1 FROM orders WHERE id = $1 FOR NO KEY UPDATE`

// claimSQL moves one queued order to running and records "started". It is
// fenced: only the host's owner (TakeHost) claims, so a worker that was
// frozen or cut off while another took the host over can never start
// another order of it. An order whose deadline passed is never claimed: it
// never shows as started.
const claimSQL = claimHead + ` AND (expires_at IS NULL OR expires_at > now())
		AND (waiter IS NULL OR ` + waiterPresent + `) AND NOT ` + parentEnded + claimTail

// claimHead and claimTail are a claim's statement around what it asks of
// the order beyond being queued on a host worker ($2) owns.
const (
	claimHead = `WITH c AS (
	UPDATE orders SET status = 'running', attempt = attempt + 1, started_at = now(),
		stream_seq = $3, worker = $2
	WHERE id = $1 AND status = 'queued'
		AND EXISTS (SELECT 1 FROM hosts h WHERE h.host = orders.host AND h.owner = $2)`
	claimTail = `
	RETURNING ` + orderCols + `
), e AS (
	INSERT INTO order_events (order_id, at, type, status, actor, detail)
	SELECT id, started_at, 'started', 'running', $2, jsonb_build_object('attempt', attempt, 'stream_seq', $3::bigint) FROM c
)
SELECT ` + orderCols + ` FROM c`
)

// ClaimRan claims again, to record its result, order id, which worker
// ran under a claim PostgreSQL lost since (a failover to a standby the
// claim had not reached, a restore from a backup taken before it): the
// order is queued again, below the attempt it ran under. Fenced as Claim
// is, but without what Claim asks of an order that is to start (its
// deadline not passed, its waiter or parent run still there): this one
// started within them, and a run past its deadline to start was refused
// here, its result lost and the order later ended expired, never
// started. claimed is false, with the order as it is, when it was not
// queued, or the host is not worker's.
func (s *Store) ClaimRan(ctx context.Context, id uuid.UUID, worker string, seq uint64) (o *order.Order, claimed bool, err error) {
	// Its fence is read with no wait for the row's lock between it and
	// the claim, as Claim's is (claimOnce).
	o, err = s.claimOnce(ctx, claimRan, id, worker, seq)
	if err == nil {
		return o, true, nil
	}
	if err != pgx.ErrNoRows {
		return nil, false, translate("claim again order "+id.String(), err)
	}
	o, err = s.GetOrder(ctx, id)
	return o, false, err
}

// waiterPresent holds for an order of the orders table whose waiter (an
// API process waiting for it for a client that never learns its id) is
// alive, by PostgreSQL's clock (api_presence, migration 00023).
const waiterPresent = `EXISTS (SELECT 1 FROM api_presence p WHERE p.instance = orders.waiter AND p.alive_until > now())`

// parentEnded holds for an order of the orders table that is a
// sub-runbook run its parent run waits for (parent_run, migration 00025)
// when that run has ended: its delegation, which the run keeps while it
// runs and which goes when it ends (the orders_erase trigger), is gone.
// The delegations table is read, not the parent's row: a worker's login
// sees only its own host's orders (row security), and the parent runs
// on another host.
const parentEnded = `(orders.parent_run IS NOT NULL AND NOT EXISTS (SELECT 1 FROM runbook_delegations d WHERE d.order_id = orders.parent_run))`

// ErrWaiterGone is returned by a claim of an order whose waiter is gone:
// the API process that waited for it for its client stopped renewing its
// presence (killed, crashed, cut off for longer than its life), or the
// runbook run that waited for it as a sub-runbook has ended. Nobody
// would read its result, so it is not claimed; the worker cancels it
// (CancelWaiterGone).
var ErrWaiterGone = errors.New("the API process waiting for this order is gone")

// claimed interprets a claim statement's outcome: the claimed order, or
// the order as it is when it was not queued.
func (s *Store) claimed(ctx context.Context, id uuid.UUID, worker string, o *order.Order, err error) (*order.Order, bool, error) {
	if err == nil {
		return o, true, nil
	}
	if err != pgx.ErrNoRows {
		return nil, false, translate("claim order "+id.String(), err)
	}
	o, err = s.GetOrder(ctx, id)
	if err != nil {
		return nil, false, err
	}
	if o.Status == order.StatusQueued {
		// Still queued and not claimed: its deadline passed (judged by
		// PostgreSQL's clock, as the claim was), the fence refused it, or
		// its waiter is gone.
		var expired, owner, bound bool
		if err := s.pool.QueryRow(ctx, `SELECT coalesce(expires_at <= now(), false),
			EXISTS (SELECT 1 FROM hosts h WHERE h.host = orders.host AND h.owner = $2),
			waiter IS NOT NULL OR parent_run IS NOT NULL FROM orders WHERE id = $1`, id, worker).Scan(&expired, &owner, &bound); err != nil {
			return nil, false, translate("claim order "+id.String(), err)
		}
		switch {
		case expired:
		case owner && bound:
			// Its waiter was gone at the claim. CancelWaiterGone judges
			// it again: one renewed since is claimed at the next try.
			return o, false, fmt.Errorf("claim order %s: %w", id, ErrWaiterGone)
		default:
			return o, false, fmt.Errorf("claim order %s: %w", id, ErrNotOwner)
		}
	}
	return o, false, nil
}

// CancelWaiterGone cancels a queued order whose waiter is gone
// (ErrWaiterGone) as worker, the host's owner, recording why. It returns
// false when the order no longer is one: claimed or ended meanwhile, its
// waiter alive again, or the host no longer worker's; else true and the
// reason recorded (WaiterGoneReason or ParentEndedReason).
func (s *Store) CancelWaiterGone(ctx context.Context, id uuid.UUID, worker string) (bool, string, error) {
	const q = `WITH u AS (
	UPDATE orders SET status = 'canceled', finished_at = now(),
		error = CASE WHEN ` + parentEnded + ` THEN $4 ELSE $3 END
	WHERE id = $1 AND status = 'queued'
		AND (waiter IS NOT NULL AND NOT ` + waiterPresent + ` OR ` + parentEnded + `)
		AND EXISTS (SELECT 1 FROM hosts h WHERE h.host = orders.host AND h.owner = $2)
	RETURNING id, status, finished_at, attempt, waiter, parent_run, error
), e AS (
	INSERT INTO order_events (order_id, at, type, status, actor, detail)
	SELECT id, finished_at, 'canceled', status, $2,
		jsonb_strip_nulls(jsonb_build_object('reason', error, 'attempt', attempt, 'waiter', waiter, 'parent_run', parent_run)) FROM u
)
SELECT count(*), coalesce(max(error), '') FROM u`
	var (
		n      int
		reason string
	)
	if err := s.pool.QueryRow(ctx, q, id, worker, WaiterGoneReason, ParentEndedReason).Scan(&n, &reason); err != nil {
		return false, "", translate(fmt.Sprintf("cancel order %s of a gone waiter", id), err)
	}
	return n == 1, reason, nil
}

// ParentEndedReason is the error and event reason of a sub-runbook run
// canceled because the run that waited for it had ended.
const ParentEndedReason = "canceled before it started: the runbook run that waited for it as a sub-runbook has ended (killed, canceled, timed out, its worker lost, or its script exited), so nothing would read its result"

// WaiterGoneReason is the error and event reason of an order canceled
// because its waiter is gone.
const WaiterGoneReason = "canceled before it started: the API process waiting for it for its client is gone (killed, crashed or cut off), so nobody would read its result"

// Finish is how an attempt ended.
type Finish struct {
	Status order.Status
	Result order.Result
	Actor  string         // the worker instance
	Detail map[string]any // extra event detail (e.g. the rejection reason)
	// Processes is how the end of the attempt's processes was verified,
	// stored on the order; nil when no process ran.
	Processes map[string]any
	// Record is the attempt's process record when it was not committed
	// on its own: the leader had exited before it would have been
	// (executor.Request.OnStart), so it goes with the result, under the
	// result's guard. Started is when the process was started, on the
	// worker's monotonic clock: the record is dated back by the time
	// since. nil when the record was committed at the start
	// (RecordProcess), or nothing ran.
	Record  *Process
	Started time.Time
	// Spilled holds the content of stdout (0) and stderr (1) when it is
	// in a file, not in Result (whose Content is then nil): it is
	// streamed from there into the order's row (writeStaged). The
	// caller closes it once the result is written.
	Spilled [2]SpilledOutput
	// ReadBack, when not nil, is given the order as the result's
	// statement wrote it (every column, as GetOrder scans it), once that
	// statement committed, when the result is small enough to be read
	// back whole (readsBack); else it is left as it was. serve's worker
	// hands that order to the API's waiter in the same process, which
	// answers from it instead of reading the row again (docs/decisions.md,
	// "A ?wait answered from its worker's commit").
	ReadBack *ReadBack
}

// ReadBack receives the order a result's commit wrote (Finish.ReadBack).
type ReadBack struct {
	Order *order.Order
}

// readsBack reports whether f's result statement returns the order it
// writes: asked for, and its outputs below LeaveOutputsFrom, the bound
// under which GetOrderLean reads them whole too (so the order read back
// is the one every read gives), far below the staged writes' bound.
func readsBack(f Finish) bool {
	r := f.Result
	return f.ReadBack != nil && !stagesOutputs(f) && r.Stdout.Bytes+r.Stderr.Bytes < LeaveOutputsFrom
}

// Complete writes the result of attempt and the "finished" event, guarded by
// the attempt so a stale worker can never overwrite a newer outcome (the
// pending env values and stdin go with the terminal status: a trigger
// erases them). It returns a CodeConflict error when the order is no longer
// running under that attempt.
func (s *Store) Complete(ctx context.Context, id uuid.UUID, attempt int, f Finish) error {
	args, err := completeArgs(id, attempt, f)
	if err != nil {
		return err
	}
	var n int
	switch {
	case stagesOutputs(f):
		err = s.writeStaged(ctx, f, args, nil, func(br pgx.BatchResults) error { return br.QueryRow().Scan(&n) })
	case readsBack(f):
		// The statement's answer comes after its commit (pgx reads on to
		// the end of the implicit transaction before Scan returns).
		var o *order.Order
		if o, n, err = scanWritten(s.pool.QueryRow(ctx, completeStatement(f), args...)); err == nil && n == 1 {
			f.ReadBack.Order = o
		}
	default:
		err = s.pool.QueryRow(ctx, completeStatement(f), args...).Scan(&n)
	}
	if err != nil {
		return translate("complete order "+id.String(), err)
	}
	return completed(id, attempt, n)
}

// scanWritten scans the answer of a result statement that reads back
// (readsBack): the order it wrote, n = 1, or no row, n = 0.
func scanWritten(row pgx.Row) (o *order.Order, n int, err error) {
	o, err = scanOrder(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	return o, 1, nil
}

// Step is the outcome of CompleteAndClaim once its transaction committed.
type Step struct {
	// Done is nil when the result was written, or a CodeConflict error when
	// the order was no longer running under that attempt.
	Done error
	// Next is the next order: claimed (Claimed true), or as it is when it
	// was not queued; nil when it could not be read.
	Next    *order.Order
	Claimed bool
	// NextErr is why Next was not claimed when that is not its status:
	// ErrNotOwner, or a failure to read it back.
	NextErr error
}

// CompleteAndClaim writes the result of one order and claims the next of
// the same host in one transaction and one round trip (a few more when a
// large output is streamed: writeStaged): the worker's pipelined step
// between two orders. The result is guarded exactly as in
// Complete; the claim behaves exactly as Claim. An error means the
// transaction failed or its outcome is unknown.
func (s *Store) CompleteAndClaim(ctx context.Context, id uuid.UUID, attempt int, f Finish,
	nextID uuid.UUID, worker string, nextSeq uint64) (Step, error) {
	args, err := completeArgs(id, attempt, f)
	if err != nil {
		return Step{}, err
	}
	var (
		n        int
		written  *order.Order // read back (readsBack)
		next     *order.Order
		claimErr error
	)
	// The claim goes in its alone form (claimOnce); one that claimed
	// nothing is judged again after the result's commit, the locked way.
	claim := func(b *pgx.Batch) {
		b.Queue(claimOrder.alone, nextID, worker, int64(nextSeq))
	}
	// read reads the result's and the claim's results.
	read := func(br pgx.BatchResults) error {
		var err error
		if readsBack(f) {
			written, n, err = scanWritten(br.QueryRow())
		} else {
			err = br.QueryRow().Scan(&n)
		}
		if err != nil {
			return err
		}
		next, claimErr = scanOrder(br.QueryRow())
		if claimErr != nil && claimErr != pgx.ErrNoRows {
			return claimErr
		}
		return nil
	}
	if stagesOutputs(f) {
		err = s.writeStaged(ctx, f, args, claim, read)
	} else {
		// One transaction, the batch's own, as claimLocked's.
		b := &pgx.Batch{}
		b.Queue(completeStatement(f), args...)
		claim(b)
		br := s.pool.SendBatch(ctx, b)
		err = read(br)
		if cerr := br.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return Step{}, translate(fmt.Sprintf("complete order %s and claim %s", id, nextID), err)
	}
	if written != nil {
		// The batch's transaction committed (br.Close above).
		f.ReadBack.Order = written
	}
	step := Step{Done: completed(id, attempt, n), Next: next, Claimed: claimErr == nil}
	if !step.Claimed {
		next, claimErr = s.claimLocked(ctx, claimOrder.locked, nextID, worker, nextSeq)
		step.Next, step.Claimed, step.NextErr = s.claimed(ctx, nextID, worker, next, claimErr)
	}
	return step, nil
}

// completeSQL writes an attempt's result and the "finished" event, guarded
// by the attempt. It never names env or stdin: the orders_erase trigger
// (migration 00024) erases them, so a worker's role needs no right to write them
// (docs/sql.md, "A role for workers").
const completeSQL = `WITH u AS (
	UPDATE orders SET status = $3, finished_at = now(), exit_code = $4, signal = nullif($5, ''),
		duration_ms = $6, error = nullif($7, ''),
		stdout = $8, stdout_bytes = $9, stdout_truncated = $10, stdout_sha256 = $11,
		stderr = $12, stderr_bytes = $13, stderr_truncated = $14, stderr_sha256 = $15,
		processes = $18
	WHERE id = $1 AND attempt = $2 AND status = 'running'
	RETURNING id, status, finished_at
), e AS (
	INSERT INTO order_events (order_id, at, type, status, actor, detail)
	SELECT id, finished_at, 'finished', status, $16, $17 FROM u
)
SELECT count(*) FROM u`

// completeRecordSQL is completeSQL that also writes the attempt's
// process record (Finish.Record), from $19 on, when the result is
// written: the same guard, the same transaction, and started_at dated
// back by the run's time as the worker measured it ($26, microseconds),
// on PostgreSQL's clock as a record committed at the start is.
var completeRecordSQL = strings.Replace(completeSQL, "\nSELECT count(*) FROM u", `, r AS (
	INSERT INTO order_processes (order_id, attempt, worker, pid, pgid, start_time, boot_id, machine_id, pid_ns, cgroup, started_at)
	SELECT id, $2, $16, $19, $20, $21, $22, $23, $24, $25, now() - $26 * interval '1 microsecond' FROM u
)
SELECT count(*) FROM u`, 1)

// readBackSQL makes a result statement return the order it wrote, every
// column as the row holds it after the statement's triggers (orderCols,
// scanned by scanOrder as every read is), instead of the count: no row
// is the count's 0. Computed once from the statements it reads back, so
// the two never differ in what they write; a rewrite that stopped
// matching would fail every read-back write's scan
// (worker's TestReadBackIsTheOrderAsStored).
var readBackSQL = strings.NewReplacer(
	"RETURNING id, status, finished_at\n", "RETURNING "+orderCols+"\n",
	"\nSELECT count(*) FROM u", "\nSELECT "+orderCols+" FROM u")

// The result statements that read back (readsBack).
var (
	completeReadSQL       = readBackSQL.Replace(completeSQL)
	completeRecordReadSQL = readBackSQL.Replace(completeRecordSQL)
)

// completeStatement is the result statement for f: completeRecordSQL
// when its process record goes with it, either reading back when f does
// (readsBack).
func completeStatement(f Finish) string {
	switch {
	case f.Record != nil && readsBack(f):
		return completeRecordReadSQL
	case f.Record != nil:
		return completeRecordSQL
	case readsBack(f):
		return completeReadSQL
	}
	return completeSQL
}

func completeArgs(id uuid.UUID, attempt int, f Finish) ([]any, error) {
	r := f.Result
	dj, ok := flatDetail(attempt, f)
	if !ok {
		detail := map[string]any{"attempt": attempt}
		for k, v := range f.Detail {
			detail[k] = v
		}
		if r.ExitCode != nil {
			detail["exit_code"] = *r.ExitCode
		}
		if r.Signal != "" {
			detail["signal"] = r.Signal
		}
		if r.Error != "" {
			detail["error"] = r.Error
		}
		var err error
		if dj, err = json.Marshal(detail); err != nil {
			return nil, fmt.Errorf("encode event detail: %w", err)
		}
	}
	var exitCode *int32
	if r.ExitCode != nil {
		c := int32(*r.ExitCode)
		exitCode = &c
	}
	var procs []byte
	if f.Processes != nil {
		if procs, ok = appendFlatJSON(nil, f.Processes); !ok {
			var err error
			if procs, err = json.Marshal(f.Processes); err != nil {
				return nil, fmt.Errorf("encode process outcome: %w", err)
			}
		}
	}
	args := []any{id, attempt, string(f.Status), exitCode, r.Signal, r.DurationMS, r.Error,
		r.Stdout.Content, r.Stdout.Bytes, r.Stdout.Truncated, r.Stdout.SHA256,
		r.Stderr.Content, r.Stderr.Bytes, r.Stderr.Truncated, r.Stderr.SHA256,
		f.Actor, dj, procs}
	if p := f.Record; p != nil {
		args = append(args, p.PID, p.PGID, int64(p.StartTime), p.BootID, p.MachineID, int64(p.PidNS), p.Cgroup,
			time.Since(f.Started).Microseconds())
	}
	return args, nil
}

// flatDetail is the finished event's detail as completeArgs's map and
// json.Marshal make it (attempt, f.Detail, exit_code, signal, error),
// written directly for what every order's result holds: f.Detail's
// values plain (see appendFlatJSON) and none of its keys one of the four.
// The map, the boxing and encoding/json's walk were ~20 of the result
// write's allocations per order. ok is false otherwise.
func flatDetail(attempt int, f Finish) (dj []byte, ok bool) {
	for _, k := range [...]string{"attempt", "exit_code", "signal", "error"} {
		if _, dup := f.Detail[k]; dup {
			return nil, false
		}
	}
	r := f.Result
	dj = make([]byte, 0, 128)
	dj = append(dj, `{"attempt":`...)
	dj = strconv.AppendInt(dj, int64(attempt), 10)
	if r.ExitCode != nil {
		dj = append(dj, `,"exit_code":`...)
		dj = strconv.AppendInt(dj, int64(*r.ExitCode), 10)
	}
	for _, kv := range [...][2]string{{"signal", r.Signal}, {"error", r.Error}} {
		if kv[1] == "" {
			continue
		}
		dj = append(append(append(dj, `,"`...), kv[0]...), `":`...)
		if dj, ok = appendFlatValue(dj, kv[1]); !ok {
			return nil, false
		}
	}
	if len(f.Detail) == 0 {
		return append(dj, '}'), true
	}
	if dj = appendFlatJSONBody(append(dj, ','), f.Detail, &ok); !ok {
		return nil, false
	}
	return dj, true
}

// appendFlatJSON appends m as a JSON object when each of its keys and
// values is plain (appendFlatValue); ok is false otherwise.
func appendFlatJSON(dst []byte, m map[string]any) (_ []byte, ok bool) {
	dst = append(dst, '{')
	if len(m) == 0 {
		return append(dst, '}'), true
	}
	dst = appendFlatJSONBody(dst, m, &ok)
	return dst, ok
}

// appendFlatJSONBody appends m's members and the closing brace, in the
// map's order (the columns are jsonb: their order is PostgreSQL's).
func appendFlatJSONBody(dst []byte, m map[string]any, ok *bool) []byte {
	first := true
	for k, v := range m {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		if dst, *ok = appendFlatValue(dst, k); !*ok {
			return dst
		}
		dst = append(dst, ':')
		if dst, *ok = appendFlatValue(dst, v); !*ok {
			return dst
		}
	}
	*ok = true
	return append(dst, '}')
}

// appendFlatValue appends v as JSON when it is a bool, an int or a string
// of printable UTF-8 with nothing to escape; ok is false otherwise (the
// caller then leaves it to encoding/json).
func appendFlatValue(dst []byte, v any) (_ []byte, ok bool) {
	switch v := v.(type) {
	case bool:
		return strconv.AppendBool(dst, v), true
	case int:
		return strconv.AppendInt(dst, int64(v), 10), true
	case string:
		if !utf8.ValidString(v) {
			return dst, false
		}
		for i := 0; i < len(v); i++ {
			if c := v[i]; c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' || c == 0x7f {
				return dst, false
			}
		}
		if strings.ContainsRune(v, '\u2028') || strings.ContainsRune(v, '\u2029') {
			return dst, false
		}
		dst = append(dst, '"')
		dst = append(dst, v...)
		return append(dst, '"'), true
	}
	return dst, false
}

// completed turns the number of rows a completion updated into an error
// when the order was no longer running under that attempt.
func completed(id uuid.UUID, attempt, n int) error {
	if n == 0 {
		return order.Errorf(order.CodeConflict, "order %s is no longer running as attempt %d", id, attempt)
	}
	return nil
}

// Cancel makes a queued order canceled, so it never starts. It returns false
// when the order was not queued any more.
func (s *Store) Cancel(ctx context.Context, id uuid.UUID, actor, reason string) (bool, error) {
	return s.transition(ctx, id, order.StatusQueued, order.StatusCanceled, "canceled", actor, reason)
}

// Expire makes a queued order whose deadline passed expired. It returns
// false when the order was not queued any more, and a CodeConflict error
// when it is queued and its deadline (judged by PostgreSQL's clock, as
// the claim judges it) has not passed or it has none: the caller's word
// that it is due is checked here too, and an order expired early is
// lost to its client.
func (s *Store) Expire(ctx context.Context, id uuid.UUID, actor string) (bool, error) {
	const q = `WITH u AS (
	UPDATE orders SET status = 'expired', finished_at = now(), error = $3
	WHERE id = $1 AND status = 'queued' AND expires_at <= now()
	RETURNING id, status, finished_at, attempt
), e AS (
	INSERT INTO order_events (order_id, at, type, status, actor, detail)
	SELECT id, finished_at, 'expired', status, $2, jsonb_build_object('reason', $3::text, 'attempt', attempt) FROM u
)
SELECT count(*) FROM u`
	var n int
	if err := s.pool.QueryRow(ctx, q, id, actor, "deadline passed before it started").Scan(&n); err != nil {
		return false, translate(fmt.Sprintf("mark order %s expired", id), err)
	}
	if n == 1 {
		return true, nil
	}
	var notDue bool
	err := s.pool.QueryRow(ctx, `SELECT status = 'queued' FROM orders WHERE id = $1`, id).Scan(&notDue)
	if err != nil && err != pgx.ErrNoRows {
		return false, translate(fmt.Sprintf("mark order %s expired", id), err)
	}
	if notDue {
		return false, order.Errorf(order.CodeConflict, "order %s is not expired: it is queued and its deadline has not passed", id)
	}
	return false, nil
}

// transition moves an order from one status to a terminal one with its
// event, in one statement. It is not fenced: its callers end queued
// orders, which no worker holds (nobody can claim an expired one), and
// the API that cancels one owns no host. Ending a running attempt is
// the host owner's (InterruptAttempt, fenced).
func (s *Store) transition(ctx context.Context, id uuid.UUID, from, to order.Status, event, actor, reason string) (bool, error) {
	const q = `WITH u AS (
	UPDATE orders SET status = $3, finished_at = now(), error = nullif($5, '')
	WHERE id = $1 AND status = $2
	RETURNING id, status, finished_at, attempt
), e AS (
	INSERT INTO order_events (order_id, at, type, status, actor, detail)
	SELECT id, finished_at, $4, status, $6, jsonb_build_object('reason', $5::text, 'attempt', attempt) FROM u
)
SELECT count(*) FROM u`
	var n int
	if err := s.pool.QueryRow(ctx, q, id, string(from), string(to), event, reason, actor).Scan(&n); err != nil {
		return false, translate(fmt.Sprintf("mark order %s %s", id, to), err)
	}
	return n == 1, nil
}
