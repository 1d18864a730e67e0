package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/orderly-run/orderly/internal/order"
)

// ErrNotOwner is returned when a worker claims an order or records a
// process for a host it no longer owns: another worker has taken the host
// over, and this one must stop consuming at once.
var ErrNotOwner = errors.New("this worker is no longer the host's owner")

// Owner identifies the worker process that owns a host: its instance, and
// the pid, start time and boot id that let a successor on the same machine
// tell whether that very process still lives.
type Owner struct {
	Instance string
	PID      int
	Start    uint64 // /proc/<pid>/stat starttime
	Boot     string // /proc/sys/kernel/random/boot_id
	PidNS    uint64 // the inode of its pid namespace, PID's; 0 unknown
}

// ownerPidNS is how owner_boot carries the owner's pid namespace after
// its boot id (no column of its own): containers on one machine share its
// boot id, and a pid means something only in its namespace. A record
// without it (an owner from before it) says nothing of its namespace;
// one with it, read by a worker from before it, names no boot that
// worker is on: either way nobody judges the owner gone.
const ownerPidNS = " pid_ns:"

// bootColumn is what owner_boot stores of o.
func (o Owner) bootColumn() string {
	if o.PidNS == 0 {
		return o.Boot
	}
	return o.Boot + ownerPidNS + strconv.FormatUint(o.PidNS, 10)
}

// setBoot reads owner_boot's value col into o.
func (o *Owner) setBoot(col string) {
	boot, ns, ok := strings.Cut(col, ownerPidNS)
	o.Boot, o.PidNS = boot, 0
	if ok {
		if n, err := strconv.ParseUint(ns, 10, 64); err == nil {
			o.PidNS = n
		} else {
			o.Boot = col // not one of ours: no boot this machine is on
		}
	}
}

// TakeHost makes me the owner of host: from its commit on, no other worker
// can claim an order of host (the claim requires ownership). It returns the
// previous owner, zero when there was none, and the new ownership epoch.
func (s *Store) TakeHost(ctx context.Context, host, version string, me Owner) (prev Owner, epoch int64, err error) {
	return s.takeHost(ctx, host, version, me, nil)
}

// TakeHostFrom is TakeHost on condition that host's owner is still
// from at epoch, as OwnerEpoch read them before the worker wrote the
// lease it takes the host over with: ErrHostTakenMeanwhile when another
// takeover, or a holder's ConfirmOwner, committed since. Two workers
// that each wrote the lease key with a plain put (a standby's take after
// beaten ones, a holder's take-back) cannot tell from the key which of
// them holds the host; the first of their commits here decides, and the
// other claims nothing (docs/decisions.md, hD25).
func (s *Store) TakeHostFrom(ctx context.Context, host, version string, me Owner, from string, epoch int64) (prev Owner, now int64, err error) {
	return s.takeHost(ctx, host, version, me, &ownerAt{from, epoch})
}

// ownerAt is a host's owner at an epoch (TakeHostFrom).
type ownerAt struct {
	instance string
	epoch    int64
}

// ErrHostTakenMeanwhile refuses TakeHostFrom: the host's owner is no
// longer the one read before the lease was taken.
var ErrHostTakenMeanwhile = errors.New("another worker took the host over since its owner was read")

// takeHost is TakeHost, and TakeHostFrom when from is set.
func (s *Store) takeHost(ctx context.Context, host, version string, me Owner, from *ownerAt) (prev Owner, epoch int64, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var start, was int64
		var boot string
		err := tx.QueryRow(ctx, `SELECT owner, owner_epoch, owner_pid, owner_start, owner_boot FROM hosts WHERE host = $1 FOR UPDATE`,
			host).Scan(&prev.Instance, &was, &prev.PID, &start, &boot)
		if err != nil && err != pgx.ErrNoRows {
			return err
		}
		prev.Start = uint64(start)
		prev.setBoot(boot)
		if from != nil && (prev.Instance != from.instance || was != from.epoch) {
			return fmt.Errorf("%w (read %q at epoch %d, now %q at epoch %d)", ErrHostTakenMeanwhile, from.instance, from.epoch, prev.Instance, was)
		}
		// The upsert checks the owner read too: a host with no row has
		// nothing for the FOR UPDATE to lock, and another takeover's
		// insert, uncommitted then, is what the conflict waits for and
		// then updates (TestTakeHostFromRefusesAFirstTakeoverCommittedMeanwhile).
		var fromInstance *string
		var fromEpoch *int64
		if from != nil {
			fromInstance, fromEpoch = &from.instance, &from.epoch
		}
		err = tx.QueryRow(ctx, `INSERT INTO hosts (host, version, instance, owner, owner_epoch, owner_pid, owner_start, owner_boot, owned_at)
			VALUES ($1, $2, $3, $3, 1, $4, $5, $6, now())
			ON CONFLICT (host) DO UPDATE SET version = $2, instance = $3, owner = $3, owner_epoch = hosts.owner_epoch + 1,
				owner_pid = $4, owner_start = $5, owner_boot = $6, owned_at = now(), last_seen = now()
			WHERE $7::text IS NULL OR (hosts.owner = $7 AND hosts.owner_epoch = $8)
			RETURNING owner_epoch`, host, version, me.Instance, me.PID, int64(me.Start), me.bootColumn(), fromInstance, fromEpoch).Scan(&epoch)
		if from != nil && errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w (read %q at epoch %d; another takeover's row was committed meanwhile)", ErrHostTakenMeanwhile, from.instance, from.epoch)
		}
		return err
	})
	if errors.Is(err, ErrHostTakenMeanwhile) {
		return Owner{}, 0, fmt.Errorf("take host %s: %w", host, err)
	}
	if err != nil {
		return Owner{}, 0, translate("take host "+host, err)
	}
	return prev, epoch, nil
}

// ConfirmOwner moves host's ownership epoch on while instance still owns
// it, and reports whether it does: a holder that took its lease key back
// with a plain put (queue's putAsOwner) claims nothing until it did, and
// a standby whose take the put landed over, having read the owner before
// it, is then refused by TakeHostFrom. Whichever of the two commits
// first holds the host.
func (s *Store) ConfirmOwner(ctx context.Context, host, instance string) (bool, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE hosts SET owner_epoch = owner_epoch + 1 WHERE host = $1 AND owner = $2`, host, instance)
	if err != nil {
		return false, translate("confirm the owner of host "+host, err)
	}
	return tag.RowsAffected() == 1, nil
}

// HostOwner is host's owner as the last TakeHost recorded it; zero when
// nobody ever took the host.
func (s *Store) HostOwner(ctx context.Context, host string) (Owner, error) {
	var o Owner
	var start int64
	var boot string
	err := s.pool.QueryRow(ctx, `SELECT owner, owner_pid, owner_start, owner_boot FROM hosts WHERE host = $1`,
		host).Scan(&o.Instance, &o.PID, &start, &boot)
	if errors.Is(err, pgx.ErrNoRows) {
		return Owner{}, nil
	}
	if err != nil {
		return Owner{}, translate("read the owner of host "+host, err)
	}
	o.Start = uint64(start)
	o.setBoot(boot)
	return o, nil
}

// OwnerEpoch is host's owner's instance and its ownership epoch, which
// moves on at each takeover and each ConfirmOwner; "" and 0 when nobody
// ever took the host.
func (s *Store) OwnerEpoch(ctx context.Context, host string) (string, int64, error) {
	var owner string
	var epoch int64
	err := s.pool.QueryRow(ctx, `SELECT owner, owner_epoch FROM hosts WHERE host = $1`, host).Scan(&owner, &epoch)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", 0, nil
	}
	return owner, epoch, translate("read the owner of host "+host, err)
}

// CheckLogin reports a clear error when the database login is confined
// to other hosts' rows (worker_logins, docs/sql.md): a worker of host
// would see none of its orders and could not take it over.
func (s *Store) CheckLogin(ctx context.Context, host string) error {
	var login string
	var hosts, missing []string
	tables, columns := make([]string, len(claimReads)), make([]string, len(claimReads))
	for i, r := range claimReads {
		tables[i], columns[i] = r[0], r[1]
	}
	// One statement: the login and each read a claim makes, one after
	// another, were six round trips at every worker's start, up to half
	// a second with a whole fleet's workers started at once on a loaded
	// machine (docs/decisions.md, hE29). The login as the row policies
	// judge it (migration 00012): the session's login when it is listed,
	// else the current role. A read by column where claimReads names
	// one: has_table_privilege is false for a role with column grants
	// alone.
	if err := s.pool.QueryRow(ctx, `SELECT CASE WHEN h IS NULL THEN current_user ELSE session_user END,
		coalesce(h, worker_login_hosts(current_user)),
		ARRAY(SELECT CASE WHEN c = '' THEN t ELSE t || '.' || c END
			FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS r(t, c, n)
			WHERE NOT CASE WHEN c = '' THEN has_table_privilege(t, 'SELECT') ELSE has_column_privilege(t, c, 'SELECT') END
			ORDER BY n)
		FROM (SELECT worker_login_hosts(session_user) AS h) s`, tables, columns).Scan(&login, &hosts, &missing); err != nil {
		return translate("check login", err)
	}
	if hosts != nil && !slices.Contains(hosts, host) {
		slices.Sort(hosts)
		return fmt.Errorf("the database login %s may work for hosts %s only (worker_logins, docs/sql.md), not %s",
			login, strings.Join(hosts, ", "), host)
	}
	if len(missing) > 0 {
		return fmt.Errorf("the database login %s cannot read %s, which a claim reads: run docs/sql.md's block (\"A role for workers\") again for its role "+
			"(a migration grants them to a role named orderly_worker only)", login, strings.Join(missing, ", "))
	}
	return nil
}

// claimReads are the tables (and columns: table, column; "" for the
// whole table) that a claim reads and a migration added after the worker
// role's first grants: the migration grants them to a role named
// orderly_worker, and a worker role
// of another name lacks them until docs/sql.md's block is run again. A
// worker whose login cannot read them took its host and failed every
// claim with `permission denied`, its host's orders waiting; CheckLogin
// refuses to start it instead (hJ8's rolling upgrade).
// api_presence is read by column: since migration 00027 the role may read
// those two only, and has_table_privilege is false for a role with column
// grants alone.
var claimReads = [][2]string{{"api_presence", "instance"}, {"api_presence", "alive_until"}, {"orders", "waiter"}, // migration 00023
	{"orders", "parent_run"}, {"runbook_delegations", "order_id"}} // migration 00025

// RunningOrders returns the orders of host left running, in stream order:
// after a takeover, the ones a previous worker started and never finished.
func (s *Store) RunningOrders(ctx context.Context, host string) ([]*order.Order, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+orderCols+` FROM orders
		WHERE id IN (SELECT id FROM active_orders WHERE host = $1 AND status = 'running') AND status = 'running'
		ORDER BY stream_seq NULLS LAST, started_at`, host)
	if err != nil {
		return nil, translate("list running orders of "+host, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*order.Order, error) { return scanOrder(r) })
	return out, translate("list running orders of "+host, err)
}

// LastClaimed returns the stream sequence at which a worker claimed the
// newest order of host (by id, which the index on (host, id) walks from
// the newest) that one claimed, and its id; 0 when none was among the
// host's newest lastClaimedScan orders. Every message of the host before
// that sequence was delivered, in stream order, and settled before that
// claim: a host consumer that a nats-server restart lost is made again
// there (worker.Worker.lastClaimed). An order claimed later at a higher
// sequence but submitted earlier only makes the start lower: more
// delivered again, nothing skipped; so does 0 (the first message).
func (s *Store) LastClaimed(ctx context.Context, host string) (uint64, uuid.UUID, error) {
	var id uuid.UUID
	var seq int64
	err := s.pool.QueryRow(ctx, `SELECT id, stream_seq FROM (
			SELECT id, stream_seq FROM orders WHERE host = $1 ORDER BY id DESC LIMIT $2
		) newest WHERE stream_seq IS NOT NULL ORDER BY id DESC LIMIT 1`, host, lastClaimedScan).Scan(&id, &seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, uuid.Nil, nil
	}
	if err != nil {
		return 0, uuid.Nil, translate("read the order of "+host+" claimed last", err)
	}
	return uint64(max(seq, 0)), id, nil
}

// lastClaimedScan bounds how many of a host's newest orders LastClaimed
// reads: those never claimed (a backlog queued behind a worker that is
// away, orders canceled or expired before they ran) have no sequence,
// and the walk to a claimed one read them all, a heap row each.
const lastClaimedScan = 10000

// Unreaped is an attempt that was marked abandoned (interrupted, or queued
// again) and whose processes were not reaped yet.
type Unreaped struct {
	ID       uuid.UUID
	Attempt  int
	Worker   string // the worker that ran the attempt
	Requeued bool   // queued again, not interrupted
}

// UnreapedAttempts returns the attempts of host's orders whose mark
// (InterruptAttempt, Requeue, ForgetHost) committed while nobody recorded
// their processes' end (RecordEvidence) since, oldest mark first: the
// marker died or froze between the two, or an admin abandoned the host's
// orders. Migration 00017 keeps the mark on the process record.
func (s *Store) UnreapedAttempts(ctx context.Context, host string) ([]Unreaped, error) {
	rows, err := s.pool.Query(ctx, `SELECT p.order_id, p.attempt, p.worker, o.status <> 'interrupted' OR o.attempt <> p.attempt
		FROM order_processes p JOIN orders o ON o.id = p.order_id
		WHERE p.abandoned_at IS NOT NULL AND p.reaped_at IS NULL AND o.host = $1
		ORDER BY p.abandoned_at`, host)
	if err != nil {
		return nil, translate("list unreaped attempts of "+host, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Unreaped, error) {
		var u Unreaped
		err := r.Scan(&u.ID, &u.Attempt, &u.Worker, &u.Requeued)
		return u, err
	})
	return out, translate("list unreaped attempts of "+host, err)
}

// Process is the recorded process of one attempt of an order.
type Process struct {
	PID, PGID int
	StartTime uint64
	BootID    string
	MachineID string
	PidNS     uint64
	Cgroup    string
	Worker    string
	StartedAt time.Time
	LastSeen  time.Time
}

// RecordProcess records the process an attempt started. A record that
// names the order's cgroup commits without waiting for its flush
// (synchronous_commit off for its transaction): visible to a successor
// as soon as it returns, on disk with the next commit that waits for one
// (the order's result at the latest) or the WAL writer's next flush. A
// crash of PostgreSQL itself in between loses the record and nothing
// else: the order, whose claim was flushed before the fork, is found
// running without one (process_recorded false), and the successor still
// ends what it left by its cgroup's name. A record without a cgroup (the
// order's processes are a session, found only through the record) waits
// for its flush: losing it would leave them running. It is fenced by
// the attempt: it succeeds only while the order is still running under
// that attempt for that worker, and it locks the order row while it
// checks, so a successor that marks the order interrupted either sees this
// record afterwards (and reaps the process) or makes this call fail with
// ErrNotOwner — then the caller kills the process it just started. The
// same record again succeeds: it is the retry of one whose answer was
// lost, and refusing it killed an order nobody else had touched.
func (s *Store) RecordProcess(ctx context.Context, id uuid.UUID, attempt int, worker string, p Process) error {
	args := []any{id, attempt, worker, p.PID, p.PGID, int64(p.StartTime), p.BootID, p.MachineID, int64(p.PidNS), p.Cgroup}
	var one int
	// The first record of an attempt, which every order's start writes, is
	// a plain insert: ON CONFLICT would make it a speculative one (a probe
	// of order_processes_pkey, a speculative lock and a second WAL record
	// to confirm the row). Only when the record is already there, the
	// retry of one whose answer was lost, does the statement that accepts
	// the same record again run.
	flush := p.Cgroup == ""
	err := s.recordProcess(ctx, recordProcessSQL, args, flush, &one)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "order_processes_pkey" {
		err = s.recordProcess(ctx, recordProcessAgainSQL, args, flush, &one)
	}
	if err == pgx.ErrNoRows {
		return fmt.Errorf("record process of order %s: %w", id, ErrNotOwner)
	}
	return translate("record process of order "+id.String(), err)
}

// recordProcess runs a process record's statement in a transaction of
// its own whose commit, unless flush, does not wait for the WAL's flush,
// in one round trip.
func (s *Store) recordProcess(ctx context.Context, stmt string, args []any, flush bool, one *int) error {
	if flush {
		return s.pool.QueryRow(ctx, stmt, args...).Scan(one)
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue("SET LOCAL synchronous_commit = off")
	b.Queue(stmt, args...)
	b.Queue("COMMIT")
	br := s.pool.SendBatch(ctx, b)
	_, err := br.Exec()
	if err == nil {
		_, err = br.Exec()
	}
	if err == nil {
		err = br.QueryRow().Scan(one)
	}
	if err == nil {
		_, err = br.Exec()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// recordProcessSQL records an attempt's process while the order is
// running under that attempt for that worker, with the order's row
// locked; recordProcessAgainSQL is the same for a record that may already
// be there, which it accepts again when it is the same process.
const (
	recordProcessHead = `WITH o AS (
	SELECT id FROM orders WHERE id = $1 AND attempt = $2 AND status = 'running' AND worker = $3 FOR SHARE
)
INSERT INTO order_processes (order_id, attempt, worker, pid, pgid, start_time, boot_id, machine_id, pid_ns, cgroup)
SELECT id, $2, $3, $4, $5, $6, $7, $8, $9, $10 FROM o
`
	recordProcessSQL      = recordProcessHead + `RETURNING 1`
	recordProcessAgainSQL = recordProcessHead + `ON CONFLICT (order_id, attempt) DO UPDATE SET last_seen = now()
	WHERE order_processes.worker = excluded.worker AND order_processes.pid = excluded.pid
		AND order_processes.start_time = excluded.start_time AND order_processes.boot_id = excluded.boot_id
RETURNING 1`
)

// OwnsAttempt reports whether order id is running under attempt for
// worker, which owns its host: the fence a worker checks before it starts
// what no process record can fence, an action's systemd job. A worker
// frozen between its claim and the job, and thawed after a successor
// interrupted the order, would otherwise restart the unit for a run
// recorded as interrupted.
func (s *Store) OwnsAttempt(ctx context.Context, id uuid.UUID, attempt int, worker string) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM orders WHERE id = $1 AND attempt = $2 AND status = 'running'
	AND worker = $3 AND `+ownsOrderHost+`)`, id, attempt, worker).Scan(&ok)
	return ok, translate("check the attempt of order "+id.String(), err)
}

// JobCheck carries one job's JobAfterTakeover across the caller's
// retries: the transaction of a try that recorded the event and whose
// COMMIT got no answer (a connection cut, PostgreSQL restarting). The
// next try asks PostgreSQL how that transaction ended instead of
// recording the event a second time. The zero value is a job not yet
// checked.
type JobCheck struct {
	xid string // the try's transaction (xid8), "" when none is in doubt
	// timeline is the server's timeline at the try (the first 8 hex
	// digits of its WAL file's name), "" when unknown.
	timeline string
}

// timelineSQL is the server's timeline: the first part of its current
// WAL file's name, which any role may read (pg_control_checkpoint,
// which names it plainly, is closed to orderly_worker by default). A
// promoted standby starts the next one.
const timelineSQL = `substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)`

// xidInTheFutureState is PostgreSQL's invalid_parameter_value, which
// pg_xact_status raises for a transaction id above the server's next.
const xidInTheFutureState = "22023"

// JobAfterTakeover records, as a "job_after_takeover" event of order id
// with detail, that worker queued a systemd job for the order's attempt
// and then found the order no longer running under that attempt for it
// (a successor recorded it interrupted meanwhile, say): the job may have
// run after the order's end, which the order's own record cannot show.
// One statement, the check and the event together; it returns whether the
// order was found lost, and so recorded. The check before the job
// (OwnsAttempt) and a lease fresh enough (the worker's) leave only a
// worker stopped in the few instructions before its D-Bus call; this is
// what makes such a job seen.
//
// A caller retries it on errors with the same check c: a try whose
// commit's answer was lost may have recorded the event, and the retry
// reads that try's outcome (pg_xact_status) rather than recording it
// again. The event cannot be made idempotent in its statement: the
// orderly_worker role may insert into order_events but not read it
// (docs/sql.md), so a NOT EXISTS there is refused.
func (s *Store) JobAfterTakeover(ctx context.Context, c *JobCheck, id uuid.UUID, attempt int, worker string, detail map[string]any) (bool, error) {
	what := "check the job of order " + id.String()
	if c.xid != "" {
		var (
			st       *string
			timeline string
		)
		err := s.pool.QueryRow(ctx, `SELECT pg_xact_status($1::text::xid8), `+timelineSQL, c.xid).Scan(&st, &timeline)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == xidInTheFutureState {
			// "transaction ID … is in the future": this server never
			// had that transaction (a failover to a standby that had not
			// received it, a cluster restored from a backup), so nothing
			// it holds was recorded by it. Asked again, it answers the
			// same until its counter passes that id: the retry would
			// spin until the worker stops and the event stay unwritten.
			st, err = nil, nil
		}
		if err != nil {
			return false, translate(what, err)
		}
		if c.timeline != "" && timeline != c.timeline {
			// Another timeline: a standby promoted since the try. The
			// try's transaction is in its history only if it reached
			// the standby before the primary died; if not, the promoted
			// server gives that id to a transaction of its own at once
			// (its counter starts where its replay ended), and its
			// status, read for the try's, said "committed" for an event
			// never written. Nothing tells the two apart: record it.
			st = nil
		}
		switch {
		case st != nil && *st == "committed":
			// Only a try that found the order lost has a transaction in
			// doubt, and it recorded the event.
			c.xid = ""
			return true, nil
		case st != nil && *st == "in progress":
			// Its backend has not yet seen the connection go.
			return false, fmt.Errorf("%s: the transaction of the try before is still in progress", what)
		}
		// Aborted, too old for PostgreSQL to know (NULL, after
		// millions of transactions) or never this server's: record it
		// now. A duplicate is better than a job after a takeover left
		// unseen.
		c.xid = ""
	}
	d := map[string]any{"attempt": attempt}
	for k, v := range detail {
		d[k] = v
	}
	dj, err := json.Marshal(d)
	if err != nil {
		return false, fmt.Errorf("encode the job's detail: %w", err)
	}
	// The transaction's id is read before its COMMIT is sent, with the
	// statement's answer, and assigned only when the event is written.
	const q = `WITH o AS (
	SELECT NOT EXISTS (SELECT 1 FROM orders WHERE id = $1 AND attempt = $2 AND status = 'running'
		AND worker = $3 AND ` + ownsOrderHost + `) AS lost
), e AS (
	INSERT INTO order_events (order_id, type, actor, detail) SELECT $1, 'job_after_takeover', $3, $4 FROM o
	WHERE lost AND EXISTS (SELECT 1 FROM orders WHERE id = $1)
)
SELECT lost, CASE WHEN lost THEN pg_current_xact_id()::text END, CASE WHEN lost THEN ` + timelineSQL + ` END FROM o`
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return false, translate(what, err)
	}
	// A connection released inside the transaction (an error below) is
	// closed by the pool, not reused.
	defer conn.Release()
	var (
		lost          bool
		xid, timeline *string
	)
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(q, id, attempt, worker, dj)
	br := conn.SendBatch(ctx, b)
	_, err = br.Exec()
	if err == nil {
		err = br.QueryRow().Scan(&lost, &xid, &timeline)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		// No COMMIT was sent: nothing is recorded.
		return false, translate(what, err)
	}
	if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
		if !lost || xid == nil {
			// Nothing to record, whatever became of the transaction.
			return lost, nil
		}
		c.xid, c.timeline = *xid, ""
		if timeline != nil {
			c.timeline = *timeline
		}
		return false, translate(what, err)
	}
	return lost, nil
}

// TouchProcess records that the attempt's process is still being watched:
// the "last heartbeat" an interrupted order keeps as evidence.
func (s *Store) TouchProcess(ctx context.Context, id uuid.UUID, attempt int) error {
	_, err := s.pool.Exec(ctx, `UPDATE order_processes SET last_seen = now() WHERE order_id = $1 AND attempt = $2`, id, attempt)
	return translate("touch process of order "+id.String(), err)
}

// ProcessOf returns the recorded process of an attempt, or nil when none
// was recorded (the worker stopped between the claim and the start).
func (s *Store) ProcessOf(ctx context.Context, id uuid.UUID, attempt int) (*Process, error) {
	var (
		p         Process
		start, ns int64
	)
	err := s.pool.QueryRow(ctx, `SELECT pid, pgid, start_time, boot_id, machine_id, pid_ns, cgroup, worker, started_at, last_seen
		FROM order_processes WHERE order_id = $1 AND attempt = $2`, id, attempt).
		Scan(&p.PID, &p.PGID, &start, &p.BootID, &p.MachineID, &ns, &p.Cgroup, &p.Worker, &p.StartedAt, &p.LastSeen)
	if err == pgx.ErrNoRows {
		return nil, nil
	}
	if err != nil {
		return nil, translate("read process of order "+id.String(), err)
	}
	p.StartTime, p.PidNS = uint64(start), uint64(ns)
	return &p, nil
}

// Requeue puts a running idempotent order back in the queue after its
// worker vanished, once: an order with a requeued event is not requeued
// again, whatever its attempt (a hand-back, which ran nothing, raises
// the attempt too), and its message is redelivered in stream order by
// the successor. An order whose cancel was requested is not: run again,
// it defied the request. It returns false when the order was not
// running under that attempt any more, was requeued before, was
// canceled, or actor does not own the host (then InterruptAttempt,
// which follows, says ErrNotOwner).
func (s *Store) Requeue(ctx context.Context, id uuid.UUID, attempt int, actor, reason string) (bool, error) {
	const cond = `AND idempotent AND NOT EXISTS (SELECT 1 FROM cancel_requests c WHERE c.order_id = $1) AND ` + ownsOrderHost
	ok, err := s.requeue(ctx, id, attempt, actor, "requeued", reason,
		cond+` AND NOT EXISTS (SELECT 1 FROM order_events r WHERE r.order_id = $1 AND r.type = 'requeued')`)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == insufficientPrivilege {
		// A worker login granted before it could read the events'
		// types (docs/sql.md's block, run again, grants it): its
		// first attempt only, as before, which one handed back
		// misses, but never twice.
		return s.requeue(ctx, id, attempt, actor, "requeued", reason, cond+` AND attempt = 1`)
	}
	return ok, err
}

// insufficientPrivilege is PostgreSQL's SQLSTATE for a statement its
// role may not run.
const insufficientPrivilege = "42501"

// Unclaim puts back in the queue an order that worker claimed and never
// started; why (the worker is stopping, its lease is lost, its renewal
// late) is the event's reason. It returns false when the order was not
// running under that attempt for that worker any more.
func (s *Store) Unclaim(ctx context.Context, id uuid.UUID, attempt int, worker, why string) (bool, error) {
	return s.requeue(ctx, id, attempt, worker, "unclaimed", "claimed, never started: "+why,
		`AND worker = $3 AND NOT EXISTS (SELECT 1 FROM order_processes p WHERE p.order_id = $1 AND p.attempt = $2)`)
}

// requeue moves a running attempt back to queued with its event, when
// cond (a constant SQL condition over $1 id, $2 attempt, $3 actor) holds.
// It locks the order first and checks cond in the next statement: a
// transaction that held the row (RequestCancel, recording its request)
// has committed by then, and cond sees what it wrote. In the one
// statement, cond read the snapshot taken before the wait, and an order
// whose cancel was answered as requested was queued to run again.
func (s *Store) requeue(ctx context.Context, id uuid.UUID, attempt int, actor, event, reason, cond string) (bool, error) {
	q := `WITH u AS (
	UPDATE orders SET status = 'queued', started_at = NULL, worker = ''
	WHERE id = $1 AND attempt = $2 AND status = 'running' ` + cond + `
	RETURNING id, attempt
), e AS (
	INSERT INTO order_events (order_id, type, status, actor, detail)
	SELECT id, $5, 'queued', $3, jsonb_build_object('reason', $4::text, 'attempt', attempt) FROM u
)
SELECT count(*) FROM u`
	var n int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT 1 FROM orders WHERE id = $1 FOR UPDATE`, id); err != nil {
			return err
		}
		return tx.QueryRow(ctx, q, id, attempt, actor, reason, event).Scan(&n)
	})
	if err != nil {
		return false, translate(fmt.Sprintf("%s order %s", event, id), err)
	}
	return n == 1, nil
}

// InterruptAttempt marks a running order interrupted, guarded by attempt
// like a result write: its outcome is unknown and it never runs again. It
// is fenced like a claim: only the host's owner, actor, settles its
// orders; a worker that lost the host (cut off from NATS while it held
// the next order's message) interrupted the order its successor had just
// claimed. It returns false when the order was not running under that
// attempt any more, and ErrNotOwner when actor does not own the host.
//
// out, when not nil, is the output the attempt's worker streamed before
// it died, stored in the same statement: the order reads interrupted
// with it or not at all. Stored by the evidence after the reap (two
// statements and a read of the live stream later), a reader in between
// (a follower's last read, a GET, a ?wait) was answered an interrupted
// order with no output, and the output appeared a moment after
// (docs/decisions.md, "(hB29)").
func (s *Store) InterruptAttempt(ctx context.Context, id uuid.UUID, attempt int, actor, reason string, out *PartialOutput) (bool, error) {
	const q = `WITH u AS (
	UPDATE orders SET status = 'interrupted', finished_at = now(), error = nullif($4, ''), ` + setPartialOutput + `
	WHERE id = $1 AND status = 'running' AND attempt = $2 AND ` + ownsOrderHost + `
	RETURNING id, status, finished_at, attempt
), e AS (
	INSERT INTO order_events (order_id, at, type, status, actor, detail)
	SELECT id, finished_at, 'interrupted', status, $3, jsonb_build_object('reason', $4::text, 'attempt', attempt) FROM u
)
SELECT (SELECT count(*) FROM u), EXISTS (SELECT 1 FROM orders WHERE id = $1 AND NOT ` + ownsOrderHost + `)`
	var (
		n      int
		fenced bool
	)
	args := append([]any{id, attempt, actor, reason}, out.args()...)
	if err := s.pool.QueryRow(ctx, q, args...).Scan(&n, &fenced); err != nil {
		return false, translate(fmt.Sprintf("mark order %s interrupted", id), err)
	}
	if n == 0 && fenced {
		return false, fmt.Errorf("interrupt order %s: %w", id, ErrNotOwner)
	}
	return n == 1, nil
}

// PartialOutput is the output of an attempt whose worker died, as the
// live stream held it (queue.PartialOutput): what the interrupted order
// keeps as its stored output.
type PartialOutput struct {
	Stdout, Stderr                   []byte
	StdoutTruncated, StderrTruncated bool
}

// args are setPartialOutput's parameters $5 to $9 for p (nil: none).
func (p *PartialOutput) args() []any {
	if p == nil {
		return []any{false, []byte{}, false, []byte{}, false}
	}
	return []any{true, nonNil(p.Stdout), p.StdoutTruncated, nonNil(p.Stderr), p.StderrTruncated}
}

// setPartialOutput sets an interrupted order's stored output to a
// PartialOutput's args ($5 whether there is one; $6, $7 stdout and its
// truncation; $8, $9 stderr's), unless the order holds some: a running
// order holds none (its result writes it), so only the first of the
// mark and the evidence stores it, and an order once answered with its
// output is never answered with another.
const setPartialOutput = `stdout = CASE WHEN ` + storesPartialOutput + ` THEN $6::bytea ELSE stdout END,
		stdout_bytes = CASE WHEN ` + storesPartialOutput + ` THEN octet_length($6::bytea) ELSE stdout_bytes END,
		stdout_truncated = CASE WHEN ` + storesPartialOutput + ` THEN $7 ELSE stdout_truncated END,
		stderr = CASE WHEN ` + storesPartialOutput + ` THEN $8::bytea ELSE stderr END,
		stderr_bytes = CASE WHEN ` + storesPartialOutput + ` THEN octet_length($8::bytea) ELSE stderr_bytes END,
		stderr_truncated = CASE WHEN ` + storesPartialOutput + ` THEN $9 ELSE stderr_truncated END`

// storesPartialOutput is setPartialOutput's condition; SET's right-hand
// sides read the row as it was before the UPDATE.
const storesPartialOutput = `$5 AND stdout IS NULL AND stderr IS NULL`

// ownsOrderHost is the fence of a settling write of orders: $3 owns the
// order's host.
const ownsOrderHost = `EXISTS (SELECT 1 FROM hosts h WHERE h.host = orders.host AND h.owner = $3)`

// Evidence is what a successor found and did about an interrupted
// attempt's processes, and the output that reached the live stream before
// the worker stopped when the mark did not store it (nil: none).
type Evidence struct {
	Reap   map[string]any
	Output *PartialOutput
}

// RecordEvidence stores the evidence of an abandoned attempt: the reap
// outcome on its process record, on the order and as a "reaped" event, and
// the partial output on the order when there was any and the order holds
// none (setPartialOutput): the mark stores it (InterruptAttempt), an
// admin's forget (ForgetHost) or a mark that could not read the live
// stream does not.
func (s *Store) RecordEvidence(ctx context.Context, id uuid.UUID, attempt int, actor string, ev Evidence) error {
	detail := map[string]any{"attempt": attempt}
	for k, v := range ev.Reap {
		detail[k] = v
	}
	dj, err := json.Marshal(detail)
	if err != nil {
		return fmt.Errorf("encode reap evidence: %w", err)
	}
	const q = `WITH p AS (
	UPDATE order_processes SET reaped_at = now(), reaped_by = $3, reap = $4 WHERE order_id = $1 AND attempt = $2
	RETURNING 1
), o AS (
	UPDATE orders SET processes = $4, ` + setPartialOutput + `
	WHERE id = $1 AND attempt = $2
	RETURNING 1
)
INSERT INTO order_events (order_id, type, actor, detail) VALUES ($1, 'reaped', $3, $4)`
	_, err = s.pool.Exec(ctx, q, append([]any{id, attempt, actor, dj}, ev.Output.args()...)...)
	return translate("record evidence of order "+id.String(), err)
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
