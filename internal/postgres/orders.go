package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/orderly-run/orderly/internal/order"
)

// orderCols is the column list every order query returns, in scanOrder's order.
const orderCols = `id, batch_id, kind, host, status, command, args, env_names, env, stdin,
	stdout_encode, stderr_encode, capture_stdout, capture_stderr, timeout_ms, run_as,
	dry_run, idempotent, expires_at, max_output, principal, source, correlation_id,
	idempotency_key, policy, submitted_at, started_at, finished_at, attempt, stream_seq,
	worker, exit_code, signal, duration_ms, error,
	stdout, stdout_bytes, stdout_truncated, stdout_sha256,
	stderr, stderr_bytes, stderr_truncated, stderr_sha256, processes,
	runbook, runbook_sha256, script,
	action, action_params, action_secrets, action_secret_names`

// orderScanTargets holds scanOrder's targets for the columns that need
// converting before they go into an order.Order. The nullable ones are
// pgtype values, not pointers: pgx scans a NULL-able column into a **T
// through a plan of its own built for every query (pointerPointerScanPlan,
// and a reflect.New for each non-NULL value), about 40 allocations per
// synchronous order; a pgtype value is scanned by the codec's own plan.
// The order's pointers to a time, a size or a flag point into it (one
// allocation for all of them).
type orderScanTargets struct {
	id, batchID                      pgtype.UUID
	kind, status                     string
	env                              map[string]string
	stdoutEnc, stderrEnc             string
	timeoutMS, maxOutput             int64
	expiresAt, startedAt, finishedAt pgtype.Timestamptz
	idemKey                          pgtype.Text
	policy                           []byte
	streamSeq                        pgtype.Int8
	exitCode                         pgtype.Int4
	exit                             int
	signal, errText                  pgtype.Text
	durationMS                       pgtype.Int8
	stdout, stderr                   []byte
	stdoutBytes, stderrBytes         pgtype.Int8
	stdoutTrunc, stderrTrunc         pgtype.Bool
	stdoutSum, stderrSum             []byte
	processes                        []byte // processesOf
	runbook, runbookSum              pgtype.Text
	script                           []byte
	action                           pgtype.Text
	actionParams, actionSecr         []byte
	actionSecretNames                []string
}

// textOf, int8Of, boolOf and timeOf are a scanned nullable value as the
// pointer scanning into a **T gave: nil for NULL. They point into the
// scan's targets.
func textOf(v *pgtype.Text) *string {
	if !v.Valid {
		return nil
	}
	return &v.String
}

func int8Of(v *pgtype.Int8) *int64 {
	if !v.Valid {
		return nil
	}
	return &v.Int64
}

func boolOf(v *pgtype.Bool) *bool {
	if !v.Valid {
		return nil
	}
	return &v.Bool
}

// timeOf refuses an infinite timestamp, as scanning one into a *time.Time
// did.
func timeOf(v *pgtype.Timestamptz, col string) (*time.Time, error) {
	if !v.Valid {
		return nil, nil
	}
	if v.InfinityModifier != pgtype.Finite {
		return nil, fmt.Errorf("cannot scan an infinite %s into a time", col)
	}
	return &v.Time, nil
}

// orderScan is one scanned order and its targets, in one allocation; it
// is the pgx.RowScanner scanOrder hands to Scan.
type orderScan struct {
	o     order.Order
	v     orderScanTargets
	extra []any
	self  [1]any // Scan's argument list (a slice of its own would be an allocation)
}

// orderColCount is the number of orderCols.
const orderColCount = 51

// dests are the scan's targets, in orderCols' order.
func (s *orderScan) dests() [orderColCount]any {
	o, v := &s.o, &s.v
	return [orderColCount]any{&v.id, &v.batchID, &v.kind, &o.Host, &v.status, &o.Command, &o.Args, &o.EnvNames, &v.env, &o.Stdin,
		&v.stdoutEnc, &v.stderrEnc, &o.CaptureStdout, &o.CaptureStderr, &v.timeoutMS, &o.RunAs,
		&o.DryRun, &o.Idempotent, &v.expiresAt, &v.maxOutput, &o.Principal, &o.Source, &o.CorrelationID,
		&v.idemKey, &v.policy, &o.SubmittedAt, &v.startedAt, &v.finishedAt, &o.Attempt, &v.streamSeq,
		&o.Worker, &v.exitCode, &v.signal, &v.durationMS, &v.errText,
		&v.stdout, &v.stdoutBytes, &v.stdoutTrunc, &v.stdoutSum,
		&v.stderr, &v.stderrBytes, &v.stderrTrunc, &v.stderrSum, &v.processes,
		&v.runbook, &v.runbookSum, &v.script,
		&v.action, &v.actionParams, &v.actionSecr, &v.actionSecretNames}
}

// ScanRow scans the row's orderCols, then the extra columns, with the
// scan plans of the row's connection (scanPlansOf). On a connection that
// keeps none (a pool not made by Open) it is pgx's own Scan, which builds
// a plan per column for every query.
func (s *orderScan) ScanRow(rows pgx.Rows) error {
	d := s.dests()
	fds, values := rows.FieldDescriptions(), rows.RawValues()
	var c *connScanPlans
	if conn := rows.Conn(); conn != nil {
		c = scanPlansOf(conn.TypeMap())
	}
	if c == nil {
		all := make([]any, 0, orderColCount+len(s.extra))
		return rows.Scan(append(append(all, d[:]...), s.extra...)...)
	}
	if len(fds) != len(values) {
		return fmt.Errorf("number of field descriptions must equal number of values, got %d and %d", len(fds), len(values))
	}
	if len(fds) != orderColCount+len(s.extra) {
		return fmt.Errorf("number of field descriptions must equal number of destinations, got %d and %d", len(fds), orderColCount+len(s.extra))
	}
	for i := range fds {
		var dst any
		if i < orderColCount {
			dst = d[i]
		} else {
			dst = s.extra[i-orderColCount]
		}
		if err := c.plan(i, &fds[i], dst).Scan(values[i], dst); err != nil {
			return pgx.ScanArgError{ColumnIndex: i, FieldName: fds[i].Name, Err: err}
		}
	}
	return nil
}

// scanOrder scans a row of orderCols, then extra columns into extra.
func scanOrder(row pgx.Row, extra ...any) (*order.Order, error) {
	s := &orderScan{extra: extra}
	s.self[0] = s
	if err := row.Scan(s.self[:]...); err != nil {
		return nil, err
	}
	s.extra, s.self[0] = nil, nil
	o, v := &s.o, &s.v
	o.ID = uuid.UUID(v.id.Bytes)
	if v.batchID.Valid {
		id := uuid.UUID(v.batchID.Bytes)
		o.BatchID = &id
	}
	var err error
	if o.ExpiresAt, err = timeOf(&v.expiresAt, "expires_at"); err != nil {
		return nil, err
	}
	if o.StartedAt, err = timeOf(&v.startedAt, "started_at"); err != nil {
		return nil, err
	}
	if o.FinishedAt, err = timeOf(&v.finishedAt, "finished_at"); err != nil {
		return nil, err
	}
	if o.Action, err = actionOf(textOf(&v.action), v.actionParams, v.actionSecr, v.actionSecretNames); err != nil {
		return nil, fmt.Errorf("decode action of order %s: %w", o.ID, err)
	}
	if o.Script, err = scriptOf(textOf(&v.runbook), textOf(&v.runbookSum), v.script); err != nil {
		return nil, fmt.Errorf("decode script of order %s: %w", o.ID, err)
	}
	if o.Processes, err = processesOf(v.processes); err != nil {
		return nil, fmt.Errorf("decode processes of order %s: %w", o.ID, err)
	}
	v.processes = nil // read: not kept with the order
	o.Kind, o.Status = order.Kind(v.kind), order.Status(v.status)
	o.Env = v.env
	o.StdoutEncode, o.StderrEncode = order.Encoding(v.stdoutEnc), order.Encoding(v.stderrEnc)
	o.Timeout = time.Duration(v.timeoutMS) * time.Millisecond
	o.MaxOutput = v.maxOutput
	if v.idemKey.Valid {
		o.IdempotencyKey = v.idemKey.String
	}
	if len(v.policy) > 0 {
		if o.Policy, err = decodeDecision(v.policy); err != nil {
			return nil, fmt.Errorf("decode policy of order %s: %w", o.ID, err)
		}
	}
	if v.streamSeq.Valid {
		o.StreamSeq = uint64(v.streamSeq.Int64)
	}
	if o.FinishedAt != nil || v.durationMS.Valid || v.errText.Valid {
		r := &order.Result{}
		if v.exitCode.Valid {
			v.exit = int(v.exitCode.Int32)
			r.ExitCode = &v.exit
		}
		r.Signal = v.signal.String        // "" when NULL
		r.DurationMS = v.durationMS.Int64 // 0 when NULL
		r.Error = v.errText.String
		r.Stdout = output(v.stdout, int8Of(&v.stdoutBytes), boolOf(&v.stdoutTrunc), v.stdoutSum)
		r.Stderr = output(v.stderr, int8Of(&v.stderrBytes), boolOf(&v.stderrTrunc), v.stderrSum)
		o.Result = r
	}
	return o, nil
}

// decisions are decodeDecision's latest decisions, by their JSON: the
// orders of a fleet record few distinct decisions (one per rule set and
// verdict), and the strict decode of one is seven allocations per order
// read (the claim, the answer's re-read, each order of a list). At most
// decisionsKept; when full it starts again empty.
var decisions struct {
	sync.Mutex
	m map[string]order.Decision
}

const decisionsKept = 256

// decodeDecision is decodeDecisionJSON, from decisions when raw was read
// before. A decision is handed out as a copy of its own (its slices
// cloned), so that no caller's change reaches another order's.
func decodeDecision(raw []byte) (order.Decision, error) {
	decisions.Lock()
	d, ok := decisions.m[string(raw)]
	decisions.Unlock()
	if ok {
		return cloneDecision(d), nil
	}
	d, err := decodeDecisionJSON(raw)
	if err != nil {
		return d, err
	}
	decisions.Lock()
	if decisions.m == nil || len(decisions.m) >= decisionsKept {
		decisions.m = make(map[string]order.Decision)
	}
	decisions.m[string(raw)] = cloneDecision(d)
	decisions.Unlock()
	return d, nil
}

// cloneDecision is d with slices of its own (nil stays nil, empty stays
// empty: an answer shows them differently).
func cloneDecision(d order.Decision) order.Decision {
	d.Matched, d.Deny, d.Unknown = slices.Clone(d.Matched), slices.Clone(d.Deny), slices.Clone(d.Unknown)
	return d
}

// decodeDecisionJSON reads an order's recorded policy decision, keeping
// the keys this binary does not know in Unknown instead of dropping them
// silently (see order.Decision). Strict decoding costs nothing more when
// every key is known; only a decision with others is read again.
func decodeDecisionJSON(raw []byte) (order.Decision, error) {
	var d order.Decision
	if strictDecode(raw, &d) == nil {
		return d, nil
	}
	d = order.Decision{}
	if err := json.Unmarshal(raw, &d); err != nil {
		return d, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return d, err
	}
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		one, err := json.Marshal(map[string]json.RawMessage{k: fields[k]})
		if err != nil {
			return d, err
		}
		if strictDecode(one, new(order.Decision)) != nil {
			d.Unknown = append(d.Unknown, k)
		}
	}
	return d, nil
}

// strictDecode decodes raw into v, refusing keys v has no field for.
func strictDecode(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func output(content []byte, n *int64, trunc *bool, sum []byte) order.Output {
	out := order.Output{Content: content, SHA256: sum}
	if n != nil {
		out.Bytes = *n
	}
	if trunc != nil {
		out.Truncated = *trunc
	}
	return out
}

// insertOrderSQL records a new order, its "submitted" event and its
// unpublished mark in one statement; insertOrderIdemSQL is the same for
// an order with an idempotency key, which inserts nothing when the key is
// already used by the same principal.
const (
	insertOrderHead = `WITH o AS (
	INSERT INTO orders (id, batch_id, kind, host, status, command, args, env_names, env, stdin, stdin_bytes,
		stdout_encode, stderr_encode, capture_stdout, capture_stderr, timeout_ms, run_as, dry_run,
		idempotent, expires_at, max_output, principal, source, correlation_id, idempotency_key, policy, request_sha256,
		runbook, runbook_sha256, script, action, action_params, action_secrets, action_secret_names, action_limit, waiter, parent_run)
	VALUES ($1,$2,$3,$4,'queued',$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,
		least($19::timestamptz, now() + $35::bigint * interval '1 microsecond'),
		$20,$21,$22,$23,$24,$25,$26,$27,$28,$29,$30,$31,$32,$33,$34,$36,$37)
`
	insertOrderIdem = `	ON CONFLICT (principal, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
`
	insertOrderTail = `	RETURNING id, submitted_at, expires_at
), e AS (
	INSERT INTO order_events (order_id, at, type, status, actor, detail)
	SELECT id, submitted_at, 'submitted', 'queued', $21, jsonb_build_object('source', $22::text) FROM o
), u AS (
	INSERT INTO unpublished (id, submitted_at) SELECT id, submitted_at FROM o
)
SELECT submitted_at, expires_at FROM o`
	insertOrderSQL     = insertOrderHead + insertOrderTail
	insertOrderIdemSQL = insertOrderHead + insertOrderIdem + insertOrderTail
)

// InsertOrder records a new queued order and its "submitted" event in one
// statement. With an idempotency key already used by the same principal it
// inserts nothing and returns the existing order with existed=true. The
// deadline it stores in o.ExpiresAt is the earlier of o.ExpiresAt and
// o.ExpiresIn after now() (the submission, on the clock that judges it).
func (s *Store) InsertOrder(ctx context.Context, o *order.Order) (existing *order.Order, err error) {
	policy, err := json.Marshal(o.Policy)
	if err != nil {
		return nil, fmt.Errorf("encode policy: %w", err)
	}
	var env []byte
	if len(o.Env) > 0 {
		if env, err = json.Marshal(o.Env); err != nil {
			return nil, fmt.Errorf("encode env: %w", err)
		}
	}
	var (
		idemKey *string
		reqSum  []byte
	)
	runbook, runbookSum, script, err := scriptColumns(o.Script)
	if err != nil {
		return nil, err
	}
	ac, err := actionColumns(o.Action)
	if err != nil {
		return nil, err
	}
	if o.IdempotencyKey != "" {
		idemKey, reqSum = &o.IdempotencyKey, o.RequestSHA256
		if reqSum == nil {
			reqSum = o.RequestSum()
		}
	}
	args := o.Args
	if args == nil {
		args = []string{}
	}
	names := o.EnvNames
	if names == nil {
		names = []string{}
	}
	var expiresIn *int64 // µs; NULL leaves least() the absolute deadline alone
	if o.ExpiresIn > 0 {
		us := max(o.ExpiresIn.Microseconds(), 1)
		expiresIn = &us
	}
	// Without a key nothing can conflict (orders_idempotency holds only
	// keyed rows), so the insert is a plain one: ON CONFLICT would make it
	// a speculative insertion, which probes the arbiter index first, takes
	// a speculative lock and writes a second WAL record to confirm the row.
	q := insertOrderSQL
	if idemKey != nil {
		q = insertOrderIdemSQL
	}
	params := []any{o.ID, o.BatchID, string(o.Kind), o.Host, o.Command, args, names, env, o.Stdin, len(o.Stdin),
		string(o.StdoutEncode), string(o.StderrEncode), o.CaptureStdout, o.CaptureStderr, o.Timeout.Milliseconds(), o.RunAs, o.DryRun,
		o.Idempotent, o.ExpiresAt, o.MaxOutput, o.Principal, o.Source, o.CorrelationID, idemKey, policy, reqSum,
		runbook, runbookSum, script, ac.name, ac.params, ac.secrets, ac.names, ac.limit, expiresIn, waiterParam(o.Waiter),
		waiterParam(o.ParentRun)}
	return s.insert(ctx, o, q, params, idemKey, true)
}

// waiterParam is the waiter (or parent_run) column of an order: NULL for
// none (every order but a compat surface's, or a sub-runbook's that its
// parent waits for), so that it costs them nothing.
func waiterParam(w uuid.UUID) any {
	if w == uuid.Nil {
		return nil
	}
	return w
}

// insert runs the insert q of o, and decides it when its connection broke
// (insertOutcome). again allows one more insert of an order that the fence
// found not recorded.
func (s *Store) insert(ctx context.Context, o *order.Order, q string, params []any, idemKey *string, again bool) (*order.Order, error) {
	// The backend to fence if the answer is lost; the insert goes alone,
	// or in one transaction with the inserts that arrived while another
	// was in flight (groupcommit.go).
	pid, err := s.insertGrouped(ctx, q, params, o)
	if a, ok := err.(acquireError); ok {
		return nil, translate("insert order", a.err) // nothing was sent
	}
	if lim := actionLimited(err); lim != nil {
		// The limit's trigger looks the key up with the action's lock
		// held (migration 00021), so a keyed run it refuses is not the
		// retry of one recorded: a racing retry waited for the lock and
		// then found its first run.
		return nil, lim
	}
	if err == pgx.ErrNoRows && idemKey != nil {
		return s.idempotentRepeat(ctx, o, *idemKey)
	}
	if err != nil {
		terr := translate("insert order", err)
		// SafeToRetry: the statement never left (no connection, or the
		// pool's was already closed), so nothing can have been recorded.
		// A statement out when its context's deadline passed is decided
		// as one whose connection broke: pgx closes that connection.
		// A statement refused for a column or table the schema no longer
		// has (rolled back under this process) was answered: nothing was
		// recorded, and the fence's lookups would fail the same way. So
		// was any statement PostgreSQL refused with an ERROR (not a
		// FATAL, which ends the session and may come after the commit):
		// a full disk (53100) aborts the insert's transaction and keeps
		// the session, which the fence terminated (waiting up to 2 s for
		// it) before it inserted once more into the same full disk.
		if order.ErrorCode(terr) != order.CodeUnavailable && !errors.Is(err, context.DeadlineExceeded) ||
			pgconn.SafeToRetry(err) || schemaGone(err) || refusedStatement(err) {
			return nil, notRecordedRefusal(terr)
		}
		recorded, oerr := s.insertOutcome(ctx, o, pid)
		switch {
		case oerr != nil:
			return nil, unknownOutcome(o, fmt.Errorf("insert order: %w", err), oerr)
		case recorded:
			return nil, nil
		case !again || ctx.Err() != nil:
			return nil, notRecorded(fmt.Errorf("insert order: %w", err))
		case idemKey == nil:
			// Nothing holds o's id and the fenced backend can no longer
			// record it, so o is inserted once more: its id, the primary
			// key, keeps it from being recorded twice.
			return s.insert(ctx, o, q, params, nil, false)
		}
		// The fenced backend's transaction is final, so the key tells
		// what the retry the client would send will find: the order an
		// earlier request recorded under it, or a neighbour in the same
		// group (o's own statement then inserted nothing), answered as
		// that retry would be; or nothing, and o is inserted once more
		// (a concurrent retry with the key meets it as any retry does).
		prev, err := s.idempotentRepeat(ctx, o, *idemKey)
		if order.ErrorCode(err) == order.CodeNotFound {
			return s.insert(ctx, o, q, params, idemKey, false)
		}
		return prev, err
	}
	o.Status = order.StatusQueued
	return nil, nil
}

// refusedStatement reports whether err is PostgreSQL's ERROR for the
// statement: the server answered, its transaction was rolled back, and
// the session goes on. By the severity the server sends unlocalized: the
// other is in the session's lc_messages ("FEHLER" under de_DE), which
// made every ERROR of a server set to another language than English look
// like a FATAL (TestRefusedStatementWhateverTheServersLanguage).
func refusedStatement(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	if pgErr.SeverityUnlocalized != "" {
		return pgErr.SeverityUnlocalized == "ERROR"
	}
	// A server before 9.6 sends only the localized one.
	return pgErr.Severity == "ERROR"
}

// notRecordedRefusal adds to the 503 of an insert PostgreSQL refused that
// nothing was recorded; any other error is returned as it is.
func notRecordedRefusal(terr error) error {
	var oe *order.Error
	if !errors.As(terr, &oe) || oe.Code != order.CodeUnavailable || !refusedStatement(terr) {
		return terr
	}
	return &order.Error{Code: oe.Code, Message: oe.Message + "; nothing was recorded, so it can be submitted again", Err: oe.Err}
}

// notRecorded is the 503 of an insert the fence found not recorded twice
// (its second insert broke too): it may be sent again as it is.
func notRecorded(insertErr error) error {
	return &order.Error{Code: order.CodeUnavailable,
		Message: "database unavailable: the connection broke before the order was recorded; nothing was recorded, so it can be submitted again",
		Err:     insertErr}
}

// unknownOutcome is the 503 of an insert whose connection broke and whose
// outcome the fence and read-back could not learn: the order may exist,
// so the answer names it (the reconciler queues it if it was recorded).
func unknownOutcome(o *order.Order, insertErr, readErr error) error {
	msg := "database unavailable: the order may have been recorded; look it up by id before submitting it again " +
		"(an Idempotency-Key makes a retry safe)"
	if o.IdempotencyKey != "" {
		msg = "database unavailable: the order may have been recorded; submit it again with the same Idempotency-Key, " +
			"which answers with the order if it was"
	}
	return &order.Error{Code: order.CodeUnavailable, Message: msg,
		Details: map[string]any{"order_id": o.ID}, Err: errors.Join(insertErr, fmt.Errorf("read back order %s: %w", o.ID, readErr))}
}

// insertOutcome decides an insert whose connection broke: the statement
// may have committed, or may still commit, since a cut connection does not
// stop the backend running it. So it first fences that backend (pid):
// pg_terminate_backend, waiting up to 2 s for it to exit, after which its
// transaction is committed or rolled back for good. Then it reads the row
// back on another connection: found, the order is recorded (true: the
// caller publishes it and answers 202); not found, nothing was recorded
// under o's id, nor will be. When the fence or the read fails three
// times, the error says why: the order may exist (the reconciler then
// queues it). Were the pid reused by a new backend within these seconds,
// that connection (orderly's own role on this database, by the filter)
// would be ended too and reconnect: a blip, never a wrong answer.
func (s *Store) insertOutcome(ctx context.Context, o *order.Order, pid uint32) (recorded bool, err error) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	for try, wait := 0, 50*time.Millisecond; try < 3; try, wait = try+1, wait*4 {
		var gone bool
		err = s.pool.QueryRow(rctx, `SELECT coalesce((SELECT pg_terminate_backend(pid, 2000) FROM pg_stat_activity
			WHERE pid = $1 AND datname = current_database() AND usename = current_user), true)`, int64(pid)).Scan(&gone)
		if err == nil && !gone {
			err = fmt.Errorf("backend %d did not exit", pid)
		}
		if err == nil {
			err = s.pool.QueryRow(rctx, `SELECT submitted_at, expires_at FROM orders WHERE id = $1`, o.ID).Scan(&o.SubmittedAt, &o.ExpiresAt)
			switch {
			case err == nil:
				o.Status = order.StatusQueued
				return true, nil
			case errors.Is(err, pgx.ErrNoRows):
				return false, nil
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-rctx.Done():
			t.Stop()
		}
	}
	return false, err
}

// idempotentRepeat answers a submission o whose idempotency key the
// principal already used: the first order when the request is the same,
// CodeIdempotencyReused when it asks for something else. The stored sum
// is compared in its own form: a RequestSum with o's, a Fingerprint
// (recorded before RequestSum existed) with o's legacy one, computed as
// that binary did, so a retry arriving just after an upgrade is still the
// same request. Orders recorded before request_sha256 existed have none
// and are not compared. A fan-out
// keys its orders "<key>/<host>", which a single order may have been
// given as its own key: one of them is never the other's first order
// (the fan-out would answer, for that host, with an order that ran
// before it, perhaps days before, and run nothing there).
//
// The lookup is bounded as the insert is, by the insert watch
// (insertbound.go): after an insert it runs on the intake's context,
// which never ends, and a PostgreSQL that froze with it out held the
// request for good. Cut, it is unavailable: nothing of o was recorded,
// and a retry with the key finds what the key holds.
func (s *Store) idempotentRepeat(ctx context.Context, o *order.Order, key string) (*order.Order, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, translate("get order by idempotency key", err)
	}
	nc := conn.Conn().PgConn().Conn()
	s.inserts.watch.sent(nc)
	var prevSum []byte
	row := conn.QueryRow(ctx, `SELECT `+orderCols+`, request_sha256 FROM orders WHERE principal=$1 AND idempotency_key=$2`, o.Principal, key)
	prev, err := scanOrder(row, &prevSum)
	s.inserts.watch.release(conn, nc)
	if err != nil {
		return nil, translate("get order by idempotency key", err)
	}
	sum := o.RequestSHA256
	if sum == nil {
		sum = o.RequestSum()
	}
	if prevSum != nil && !order.IsRequestSum(prevSum) {
		sum = o.LegacySHA256
		if sum == nil {
			sum = o.Fingerprint()
		}
	}
	if prevSum != nil && !bytes.Equal(prevSum, sum) || (prev.BatchID == nil) != (o.BatchID == nil) {
		return nil, &order.Error{Code: order.CodeIdempotencyReused,
			Message: "this idempotency key was already used for a different request",
			Details: map[string]any{"order_id": prev.ID, "idempotency_key": key}}
	}
	return prev, nil
}

// RecordedRequest is the order o.Principal recorded under o's idempotency
// key when it is the request o asks for, compared as InsertOrder's
// conflict compares it (idempotentRepeat): nil when the key is unused,
// CodeIdempotencyReused when it asked for something else. It answers a
// retry that a check now refuses (intake.Service.Recorded).
func (s *Store) RecordedRequest(ctx context.Context, o *order.Order) (*order.Order, error) {
	if o.IdempotencyKey == "" {
		return nil, nil
	}
	prev, err := s.idempotentRepeat(ctx, o, o.IdempotencyKey)
	if order.ErrorCode(err) == order.CodeNotFound {
		return nil, nil
	}
	return prev, err
}

// RecordedByKey is the order principal recorded under an idempotency
// key, nil when there is none: what an action run's retry reads the
// secret params of the first run from, when the action's definition is
// gone (api's recordedActionRun).
func (s *Store) RecordedByKey(ctx context.Context, principal, key string) (*order.Order, error) {
	prev, err := scanOrder(s.pool.QueryRow(ctx, `SELECT `+orderCols+` FROM orders WHERE principal=$1 AND idempotency_key=$2`, principal, key))
	if err != nil {
		if err = translate("get order by idempotency key", err); order.ErrorCode(err) == order.CodeNotFound {
			return nil, nil
		}
		return nil, err
	}
	return prev, nil
}

// Expired is an order ExpireDue moved to expired.
type Expired struct {
	ID        uuid.UUID
	Host      string
	Principal string
}

// ExpireDue moves up to limit queued orders whose deadline has passed to
// expired, with their "expired" events, in one statement, and returns them.
// It is how an order for a host with no worker ends. Any API replica may
// run it at any time: SKIP LOCKED keeps replicas off each other's rows,
// and the status condition lets an order be expired once and never after
// a worker claimed it. The order never gets a started_at.
func (s *Store) ExpireDue(ctx context.Context, limit int) ([]Expired, error) {
	const q = `WITH due AS (
	SELECT o.id FROM active_orders a JOIN orders o ON o.id = a.id
	WHERE a.expires_at <= now() AND a.status = 'queued' AND o.status = 'queued'
	ORDER BY a.expires_at LIMIT $1 FOR UPDATE OF o SKIP LOCKED
), u AS (
	UPDATE orders o SET status = 'expired', finished_at = now(), error = $2
	FROM due WHERE o.id = due.id AND o.status = 'queued'
	RETURNING o.id, o.host, o.principal, o.finished_at, o.attempt
), e AS (
	INSERT INTO order_events (order_id, at, type, status, actor, detail)
	SELECT id, finished_at, 'expired', 'expired', 'api', jsonb_build_object('reason', $2::text, 'attempt', attempt) FROM u
)
SELECT id, host, principal FROM u`
	rows, err := s.pool.Query(ctx, q, limit, "deadline passed before it started")
	if err != nil {
		return nil, translate("expire due orders", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Expired, error) {
		var e Expired
		err := r.Scan(&e.ID, &e.Host, &e.Principal)
		return e, err
	})
	return out, translate("expire due orders", err)
}

// MarkPublished records that the orders reached JetStream, so the
// reconciler leaves them alone. It is called in batches off the hot path,
// and only deletes from the small unpublished table: the orders rows are
// not touched.
func (s *Store) MarkPublished(ctx context.Context, ids []uuid.UUID) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM unpublished WHERE id = ANY($1)`, ids)
	return translate("mark orders published", err)
}

// ForgetStarted drops unpublished marks of orders that are no longer
// queued (a worker got them before the mark was written, or the mark was
// lost): they need no republishing. It asks active_orders, whose rows the
// insert writes with the mark: joined to orders, a backlog of marks large
// beside the history (a small database, a long NATS outage) was worth a
// scan of every order to the planner, every reconcile. It returns how many
// marks it dropped.
func (s *Store) ForgetStarted(ctx context.Context) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM unpublished u
		WHERE NOT EXISTS (SELECT 1 FROM active_orders a WHERE a.id = u.id AND a.status = 'queued')`)
	return tag.RowsAffected(), translate("forget started orders", err)
}

// Unpublished returns queued orders older than age that never reached
// JetStream, oldest first. The age is judged by PostgreSQL's clock, which
// wrote submitted_at; the API's own may be minutes off. The marks are an
// array, so each order is found by its id: as a join, the planner could
// take "status = 'queued'" for rare enough to scan orders for it.
func (s *Store) Unpublished(ctx context.Context, age time.Duration, limit int) ([]*order.Order, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+orderCols+` FROM orders
		WHERE id = ANY(ARRAY(SELECT id FROM unpublished WHERE submitted_at < now() - $1::bigint * interval '1 microsecond'
			ORDER BY submitted_at LIMIT $2))
		AND status = 'queued' ORDER BY submitted_at`, age.Microseconds(), limit)
	if err != nil {
		return nil, translate("list unpublished orders", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*order.Order, error) { return scanOrder(r) })
	return out, translate("list unpublished orders", err)
}

// QueuedOrder is a queued order's id, host and principal.
type QueuedOrder struct {
	ID        uuid.UUID
	Host      string
	Principal string
}

// QueuedPublishedOlderThan lists, for each host, its oldest perHost queued
// orders older than age (by PostgreSQL's clock) whose publish JetStream
// confirmed (none left in unpublished), by host and then oldest first:
// their messages must be in the orders stream.
//
// It reads each host's batch through active_orders_host (host, id) and
// stops there: the hosts come from the same index, one step per host
// (PostgreSQL has no skip scan), and each host's orders in id order until
// perHost qualify, each order's row of orders looked up by its key (the
// subqueries: as a join, the planner merged with orders in key order from
// its first row, history included). Numbering every queued order of every host instead
// (row_number() over a join) read the whole queue of a host no worker
// serves at each run, and at a few thousand queued all of orders, history
// included (docs/decisions.md, hA25).
//
// The planner prices the per-host LATERAL by the whole queue behind its
// LIMIT: past a few thousand queued, a server with JIT on compiled the
// statement at each run, ~350 ms of CPU for a few of execution
// (docs/decisions.md, hE27). It runs with jit off in a transaction of its
// own (SET LOCAL, which also holds behind a transaction pooler).
func (s *Store) QueuedPublishedOlderThan(ctx context.Context, age time.Duration, perHost int) ([]QueuedOrder, error) {
	var out []QueuedOrder
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL jit = off`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, queuedPublishedSQL, age.Microseconds(), perHost)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowToStructByPos[QueuedOrder])
		return err
	})
	return out, translate("list queued orders", err)
}

// queuedPublishedSQL is QueuedPublishedOlderThan's question.
const queuedPublishedSQL = `WITH RECURSIVE hosts (host) AS (
		(SELECT host FROM active_orders ORDER BY host LIMIT 1)
		UNION ALL
		SELECT (SELECT a.host FROM active_orders a WHERE a.host > h.host ORDER BY a.host LIMIT 1)
		FROM hosts h WHERE h.host IS NOT NULL)
	SELECT q.id, h.host, q.principal FROM hosts h CROSS JOIN LATERAL (
		SELECT a.id, (SELECT o.principal FROM orders o WHERE o.id = a.id) AS principal FROM active_orders a
		WHERE a.host = h.host AND a.status = 'queued'
		AND (SELECT o.submitted_at FROM orders o WHERE o.id = a.id) < now() - $1::bigint * interval '1 microsecond'
		AND NOT EXISTS (SELECT 1 FROM unpublished u WHERE u.id = a.id)
		ORDER BY a.id LIMIT $2) q
	WHERE h.host IS NOT NULL ORDER BY h.host, q.id`

// ActiveCounts returns how many orders of each of hosts are queued or
// running (hosts with none are left out).
func (s *Store) ActiveCounts(ctx context.Context, hosts []string) (map[string]int, error) {
	rows, err := s.pool.Query(ctx, `SELECT host, count(*)::int FROM active_orders WHERE host = ANY($1) GROUP BY host`, hosts)
	if err != nil {
		return nil, translate("count active orders", err)
	}
	out := map[string]int{}
	var host string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&host, &n}, func() error {
		out[host] = n
		return nil
	})
	return out, translate("count active orders", err)
}

// Ended returns which of ids belong to orders that can never run again:
// terminal, or deleted (past retention), and, of those, the ones no order
// row has: messages that name them were published for orders a restored
// database does not know. An order in flight has its row in
// active_orders, written in the insert's own transaction, so an id read
// from a published message is either there or ended.
func (s *Store) Ended(ctx context.Context, ids []uuid.UUID) (ended map[uuid.UUID]bool, unrecorded []uuid.UUID, err error) {
	rows, err := s.pool.Query(ctx, `SELECT t.id, NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = t.id)
		FROM unnest($1::uuid[]) AS t(id)
		WHERE NOT EXISTS (SELECT 1 FROM active_orders a WHERE a.id = t.id)`, ids)
	if err != nil {
		return nil, nil, translate("find ended orders", err)
	}
	ended = map[uuid.UUID]bool{}
	var id uuid.UUID
	var gone bool
	_, err = pgx.ForEachRow(rows, []any{&id, &gone}, func() error {
		ended[id] = true
		if gone {
			unrecorded = append(unrecorded, id)
		}
		return nil
	})
	if err != nil {
		return nil, nil, translate("find ended orders", err)
	}
	return ended, unrecorded, nil
}

// LiveOutputKept returns which of ids belong to orders whose live
// output PostgreSQL holds all of, for the API to free from the live
// stream: ended as Ended says (an id no row has included), except an
// interrupted one whose successor has not recorded its evidence yet (the
// "reaped" event of its attempt, RecordEvidence). A successor stores the
// output a dead worker published with its mark (InterruptAttempt), but a
// mark that could not read the live stream, or an admin's forget, stores
// none, and the evidence, after the reap (up to seconds), reads it back
// then: freed in between, the order was stored with none. One whose
// successor never records it (its host forgotten, the reap's write
// failed) is left to the stream's MaxAge, as every interrupted order's
// was before the API freed output.
func (s *Store) LiveOutputKept(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]bool, error) {
	rows, err := s.pool.Query(ctx, liveOutputKeptSQL, ids)
	if err != nil {
		return nil, translate("find orders whose output is kept", err)
	}
	kept := map[uuid.UUID]bool{}
	var id uuid.UUID
	_, err = pgx.ForEachRow(rows, []any{&id}, func() error {
		kept[id] = true
		return nil
	})
	if err != nil {
		return nil, translate("find orders whose output is kept", err)
	}
	return kept, nil
}

// liveOutputKeptSQL is LiveOutputKept's question: an interrupted order
// is looked up in order_events (by its index on order_id) alone.
const liveOutputKeptSQL = `SELECT t.id FROM unnest($1::uuid[]) AS t(id)
	WHERE NOT EXISTS (SELECT 1 FROM active_orders a WHERE a.id = t.id)
		AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = t.id AND o.status = 'interrupted'
			AND NOT EXISTS (SELECT 1 FROM order_events e WHERE e.order_id = o.id AND e.type = 'reaped'
				AND e.detail->>'attempt' = o.attempt::text))`

// GetOrder returns one order with its result.
func (s *Store) GetOrder(ctx context.Context, id uuid.UUID) (*order.Order, error) {
	o, err := scanOrder(s.pool.QueryRow(ctx, `SELECT `+orderCols+` FROM orders WHERE id = $1`, id))
	if err != nil {
		return nil, translate("get order "+id.String(), err)
	}
	return o, nil
}

// Filter selects orders for ListOrders. Zero fields do not filter.
type Filter struct {
	Host, Principal string
	Status          []order.Status
	Batch           *uuid.UUID
	Since, Until    *time.Time
	Cursor          *uuid.UUID // exclusive: orders older than this id
	Limit           int
	OldestFirst     bool // submission order, e.g. a host's queue as it will run
	// Runbook and Correlation select a runbook's runs and a chain of
	// sub-runbooks (runbooks.go).
	Runbook, Correlation string
	// Action selects an action's runs (actions.go).
	Action string
	// Lean leaves large kept outputs in the database, as GetOrderLean
	// does (OutputsLeft), for an answer that streams them or does not
	// show them: a page of 1,000 orders read whole held every output.
	Lean bool
	// NoOutputs reads no kept output at all (noOutputCols), for an answer
	// that shows none (?outputs=none): their sizes, truncation and hashes
	// only. It wins over Lean.
	NoOutputs bool
}

// ListOrders returns orders newest first with keyset pagination over id
// (UUIDv7, so id order is submission order). next is the cursor for the
// following page, or nil when this page is the last.
func (s *Store) ListOrders(ctx context.Context, f Filter) (list []*order.Order, next *uuid.UUID, err error) {
	var (
		where []string
		args  []any
	)
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	if f.Host != "" {
		add("host = ?", f.Host)
	}
	if f.Principal != "" {
		add("principal = ?", f.Principal)
	}
	if len(f.Status) > 0 {
		ss := make([]string, len(f.Status))
		for i, st := range f.Status {
			ss[i] = string(st)
		}
		add("status = ANY(?)", ss)
	}
	if f.Batch != nil {
		add("batch_id = ?", *f.Batch)
	}
	if f.Runbook != "" {
		add("runbook = ?", f.Runbook)
	}
	if f.Correlation != "" {
		add("correlation_id = ?", f.Correlation)
	}
	if f.Action != "" {
		add("action = ?", f.Action)
	}
	if f.Since != nil {
		add("submitted_at >= ?", *f.Since)
	}
	if f.Until != nil {
		add("submitted_at < ?", *f.Until)
	}
	if f.Cursor != nil {
		if f.OldestFirst {
			add("id > ?", *f.Cursor)
		} else {
			add("id < ?", *f.Cursor)
		}
	}
	args = append(args, f.Limit+1)
	limit := "$" + strconv.Itoa(len(args))
	if in := statusIn(f, &args, limit); in != "" {
		where = append(where, in)
	}
	sel := `SELECT ` + orderCols + ` FROM orders`
	switch {
	case f.NoOutputs:
		sel = `SELECT ` + noOutputCols + ` FROM orders`
	case f.Lean:
		sel = `SELECT ` + leanCols + ` FROM orders`
	}
	dir := " DESC"
	if f.OldestFirst {
		dir = " ASC"
	}
	page := func(where ...string) string {
		q := sel
		if len(where) > 0 {
			q += " WHERE " + strings.Join(where, " AND ")
		}
		return q + " ORDER BY id" + dir + " LIMIT " + limit
	}
	q := page(where...)
	if inWindow, offClock := windowIn(f, &args); inWindow != "" {
		n := len(where) // each page appends its own condition to f's
		q = "(" + page(append(where[:n:n], inWindow)...) + ") UNION ALL (" + page(append(where[:n:n], offClock)...) + ")" +
			" ORDER BY id" + dir + " LIMIT " + limit
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, nil, translate("list orders", err)
	}
	list, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (*order.Order, error) { return scanOrder(r) })
	if err != nil {
		return nil, nil, translate("list orders", err)
	}
	if len(list) > f.Limit {
		list = list[:f.Limit]
		id := list[len(list)-1].ID
		next = &id
	}
	return list, next, nil
}

// Event is one row of an order's history.
type Event struct {
	ID     int64
	At     time.Time
	Type   string
	Status string
	Actor  string
	Detail map[string]any
}

// OutputCapOf is the per-stream output cap the worker applied to an
// order that it recorded with a stream cut (its finished event's
// output_cap); ok is false when none is recorded (no stream was cut, or a
// worker before it finished the order).
func (s *Store) OutputCapOf(ctx context.Context, id uuid.UUID) (limit int64, ok bool, err error) {
	var v *int64
	err = s.pool.QueryRow(ctx, `SELECT (detail->>'output_cap')::bigint FROM order_events
		WHERE order_id = $1 AND type = 'finished' ORDER BY id DESC LIMIT 1`, id).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, translate("read output cap", err)
	}
	if v == nil {
		return 0, false, nil
	}
	return *v, true, nil
}

// Events returns an order's history, oldest first.
func (s *Store) Events(ctx context.Context, id uuid.UUID) ([]Event, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, at, type, coalesce(status,''), actor, detail FROM order_events WHERE order_id = $1 ORDER BY id`, id)
	if err != nil {
		return nil, translate("list order events", err)
	}
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Event, error) {
		var e Event
		err := r.Scan(&e.ID, &e.At, &e.Type, &e.Status, &e.Actor, &e.Detail)
		return e, err
	})
	return evs, translate("list order events", err)
}

// DeleteRejectionsBefore removes up to limit recorded rejections older
// than t (through rejections_at) and returns how many it removed. The
// batch is an array, deleted by primary key: as a join, the planner may
// hash the batch and scan the whole table for it, every batch.
func (s *Store) DeleteRejectionsBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM rejections WHERE id = ANY(ARRAY(
		SELECT id FROM rejections WHERE at < $1 ORDER BY at LIMIT $2))`, t, limit)
	if err != nil {
		return 0, translate("delete old rejections", err)
	}
	return tag.RowsAffected(), nil
}

// DeleteFinishedBefore removes up to limit terminal orders that finished
// before t, with their events, and returns how many it removed. Retention
// runs it in small batches so it never holds long locks.
func (s *Store) DeleteFinishedBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	// An order finished before t was submitted before t: saying so lets
	// the batch be found through orders_submitted_at, in proportion to what
	// is deleted, instead of a scan and sort of the whole table (545 ms at
	// 1M orders, docs/benchmarks.md).
	// The batch is an array, deleted by primary key, as rejections'.
	tag, err := s.pool.Exec(ctx, `DELETE FROM orders WHERE id = ANY(ARRAY(
		SELECT id FROM orders WHERE submitted_at < $1 AND finished_at < $1 AND status NOT IN ('queued','running')
		ORDER BY submitted_at LIMIT $2))`, t, limit)
	if err != nil {
		return 0, translate("delete old orders", err)
	}
	return tag.RowsAffected(), nil
}
