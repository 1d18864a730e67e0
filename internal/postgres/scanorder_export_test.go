package postgres

import (
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/orderly-run/orderly/internal/order"
)

// OrderCols and ScanOrder export the order scan to the tests.
const OrderCols = orderCols

var (
	ScanOrder      = scanOrder
	DecodeDecision = decodeDecision
)

// ScanOrderByPgx is scanOrder as it was before it kept its scan plans
// (2026-12-04): pgx's Scan into the order's fields and pgtype values,
// plans built for every query, and the policy decoded every time. TestScanOrderAsPgxScans holds the new
// scan to it.
func ScanOrderByPgx(row pgx.Row) (*order.Order, error) {
	var o order.Order
	var v struct {
		kind, status                     string
		env                              map[string]string
		stdoutEnc, stderrEnc             string
		timeoutMS, maxOutput             int64
		batchID                          pgtype.UUID
		expiresAt, startedAt, finishedAt pgtype.Timestamptz
		idemKey                          pgtype.Text
		policy                           []byte
		streamSeq                        pgtype.Int8
		exitCode                         pgtype.Int4
		signal, errText                  pgtype.Text
		durationMS                       pgtype.Int8
		stdout, stderr                   []byte
		stdoutBytes, stderrBytes         pgtype.Int8
		stdoutTrunc, stderrTrunc         pgtype.Bool
		stdoutSum, stderrSum             []byte
		processes                        map[string]any
		runbook, runbookSum              pgtype.Text
		script                           []byte
		action                           pgtype.Text
		actionParams, actionSecr         []byte
		actionSecretNames                []string
	}
	err := row.Scan(&o.ID, &v.batchID, &v.kind, &o.Host, &v.status, &o.Command, &o.Args, &o.EnvNames, &v.env, &o.Stdin,
		&v.stdoutEnc, &v.stderrEnc, &o.CaptureStdout, &o.CaptureStderr, &v.timeoutMS, &o.RunAs,
		&o.DryRun, &o.Idempotent, &v.expiresAt, &v.maxOutput, &o.Principal, &o.Source, &o.CorrelationID,
		&v.idemKey, &v.policy, &o.SubmittedAt, &v.startedAt, &v.finishedAt, &o.Attempt, &v.streamSeq,
		&o.Worker, &v.exitCode, &v.signal, &v.durationMS, &v.errText,
		&v.stdout, &v.stdoutBytes, &v.stdoutTrunc, &v.stdoutSum,
		&v.stderr, &v.stderrBytes, &v.stderrTrunc, &v.stderrSum, &v.processes,
		&v.runbook, &v.runbookSum, &v.script,
		&v.action, &v.actionParams, &v.actionSecr, &v.actionSecretNames)
	if err != nil {
		return nil, err
	}
	text := func(t pgtype.Text) *string {
		if !t.Valid {
			return nil
		}
		return &t.String
	}
	tm := func(t pgtype.Timestamptz) *time.Time {
		if !t.Valid {
			return nil
		}
		return &t.Time
	}
	if v.batchID.Valid {
		id := uuid.UUID(v.batchID.Bytes)
		o.BatchID = &id
	}
	o.ExpiresAt, o.StartedAt, o.FinishedAt = tm(v.expiresAt), tm(v.startedAt), tm(v.finishedAt)
	if o.Action, err = actionOf(text(v.action), v.actionParams, v.actionSecr, v.actionSecretNames); err != nil {
		return nil, err
	}
	if o.Script, err = scriptOf(text(v.runbook), text(v.runbookSum), v.script); err != nil {
		return nil, err
	}
	o.Processes = v.processes
	o.Kind, o.Status = order.Kind(v.kind), order.Status(v.status)
	o.Env = v.env
	o.StdoutEncode, o.StderrEncode = order.Encoding(v.stdoutEnc), order.Encoding(v.stderrEnc)
	o.Timeout = time.Duration(v.timeoutMS) * time.Millisecond
	o.MaxOutput = v.maxOutput
	if v.idemKey.Valid {
		o.IdempotencyKey = v.idemKey.String
	}
	if len(v.policy) > 0 {
		if o.Policy, err = decodeDecisionJSON(v.policy); err != nil {
			return nil, err
		}
	}
	if v.streamSeq.Valid {
		o.StreamSeq = uint64(v.streamSeq.Int64)
	}
	if o.FinishedAt != nil || v.durationMS.Valid || v.errText.Valid {
		r := &order.Result{}
		if v.exitCode.Valid {
			c := int(v.exitCode.Int32)
			r.ExitCode = &c
		}
		r.Signal = v.signal.String
		r.DurationMS = v.durationMS.Int64
		r.Error = v.errText.String
		r.Stdout = output(v.stdout, int8p(v.stdoutBytes), boolp(v.stdoutTrunc), v.stdoutSum)
		r.Stderr = output(v.stderr, int8p(v.stderrBytes), boolp(v.stderrTrunc), v.stderrSum)
		o.Result = r
	}
	return &o, nil
}

func int8p(v pgtype.Int8) *int64 {
	if !v.Valid {
		return nil
	}
	return &v.Int64
}

func boolp(v pgtype.Bool) *bool {
	if !v.Valid {
		return nil
	}
	return &v.Bool
}

// ScanInsertedTimes scans a row of two times as InsertOrder scans the
// ones its statement returns (insertedScan).
func ScanInsertedTimes(row pgx.Row, submittedAt *time.Time, expiresAt **time.Time) error {
	var s insertedScan
	return row.Scan(s.scanInto(submittedAt, expiresAt)...)
}
