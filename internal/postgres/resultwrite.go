package postgres

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/jackc/pgx/v5"
)

// stageOutputsFrom is the kept size of one output from which the result
// write streams it into the order's row (writeStaged) instead of passing it
// as a parameter. pgx encodes a parameter twice before it leaves (into its
// parameter buffer, then into the Bind message), so a 10 MiB output cost
// the worker 20 MiB of transient heap on top of the capture that holds it,
// at the moment serve's memory is highest (docs/benchmarks.md). Streaming
// costs four more round trips and, for an output that does not compress,
// a second TOAST write (the staging table's, then the row's): measured on
// PostgreSQL 15, a 1 MiB write took 5.1 → 5.3 ms of text and 4.7 → 6.5 ms
// of random bytes, a 10 MiB one 55 → 61 ms and 74 → 143 ms. From 1 MiB,
// what it saves (twice the output) outweighs a few milliseconds on a write
// that large; below it, every order (`true` included) keeps the single
// statement, and the executor's capture grows its buffer to the cap from
// the same size.
const stageOutputsFrom = 1 << 20

// SpilledOutput is an output's content kept in a file rather than in
// the Result (a worker's capture past 1 MiB: executor.Spill): Size bytes,
// read with ReadAt. The result write streams it from there (writeStaged),
// so it is never held whole in memory.
type SpilledOutput interface {
	io.ReaderAt
	Size() int64
}

// stagesOutputs reports whether f's result write streams its outputs.
func stagesOutputs(f Finish) bool {
	return stagedOut(f, 0) || stagedOut(f, 1)
}

// stagedOut reports whether output i (0 stdout, 1 stderr) of f goes
// through the staging table: spilled, or large.
func stagedOut(f Finish, i int) bool {
	if f.Spilled[i] != nil {
		return true
	}
	return staged([2][]byte{f.Result.Stdout.Content, f.Result.Stderr.Content}[i])
}

// stageTableSQL creates the session's staging table for outputs. A
// temporary table is private to the connection and not written to the
// WAL; ON COMMIT DELETE ROWS empties it in place at the end of every
// transaction that used it (a rolled-back one leaves nothing either), so
// it is created once per connection and never needs cleaning or vacuuming.
const stageTableSQL = `CREATE TEMPORARY TABLE IF NOT EXISTS orderly_staged_outputs (
	stream smallint NOT NULL,
	content bytea NOT NULL
) ON COMMIT DELETE ROWS`

// stageCopySQL streams the staged outputs in (stageReader's format).
const stageCopySQL = `COPY pg_temp.orderly_staged_outputs (stream, content) FROM STDIN (FORMAT binary)`

// Staged output streams, as stageReader writes them and
// stagedCompleteSQL reads them.
const (
	stagedStdout = 1
	stagedStderr = 2
)

// stagedCompleteSQL is completeSQL with stdout and stderr taken from the
// staging table when their parameter is NULL: a staged output's parameter
// is NULL (stagedArgs), and an output that was not staged has no row
// there, so its parameter is written as completeSQL writes it. It is
// computed once from completeSQL, like getOrderLeanSQL from orderCols, so
// the two never differ in anything else; a rewrite that stopped matching
// would write no staged output (TestLargeOutputsAreStreamedByteForByte).
var (
	stageFromTable = strings.NewReplacer(
		"stdout = $8,", fmt.Sprintf("stdout = coalesce($8::bytea, (SELECT content FROM pg_temp.orderly_staged_outputs WHERE stream = %d)),", stagedStdout),
		"stderr = $12,", fmt.Sprintf("stderr = coalesce($12::bytea, (SELECT content FROM pg_temp.orderly_staged_outputs WHERE stream = %d)),", stagedStderr),
	)
	stagedCompleteSQL       = stageFromTable.Replace(completeSQL)
	stagedCompleteRecordSQL = stageFromTable.Replace(completeRecordSQL) // with the process record
)

// stagedArgs is completeArgs' args with the staged outputs' contents
// replaced by NULL (stagedCompleteSQL reads them from the staging table).
func stagedArgs(args []any, f Finish) []any {
	out := append([]any(nil), args...)
	if stagedOut(f, 0) {
		out[7] = nil // $8
	}
	if stagedOut(f, 1) {
		out[11] = nil // $12
	}
	return out
}

// staged reports whether one output goes through the staging table.
func staged(content []byte) bool { return len(content) >= stageOutputsFrom }

// stageReader returns the outputs of f that are staged as a COPY stream in
// PostgreSQL's binary format: a header, one row (stream, content) per
// staged output, the trailer. The contents are read in place, never
// copied: pgx sends them in 64 KiB CopyData messages.
func stageReader(f Finish) (io.Reader, error) {
	// Header: signature, flags (none), header extension length (none).
	head := append([]byte("PGCOPY\n\xff\r\n\x00"), 0, 0, 0, 0, 0, 0, 0, 0)
	parts := []io.Reader{bytes.NewReader(head)}
	for i, stream := range []int16{stagedStdout, stagedStderr} {
		if !stagedOut(f, i) {
			continue
		}
		// A spilled output is read from its file from the start each
		// time: a write tried again reads it again.
		var content io.Reader
		var size int64
		if sp := f.Spilled[i]; sp != nil {
			size = sp.Size()
			content = io.NewSectionReader(sp, 0, size)
		} else {
			b := [2][]byte{f.Result.Stdout.Content, f.Result.Stderr.Content}[i]
			size, content = int64(len(b)), bytes.NewReader(b)
		}
		if size > math.MaxInt32 {
			return nil, fmt.Errorf("stage an output of %d bytes: more than a bytea holds", size)
		}
		// Two fields: the stream (int2, 2 bytes), the content (bytea).
		row := binary.BigEndian.AppendUint16(nil, 2)
		row = binary.BigEndian.AppendUint32(row, 2)
		row = binary.BigEndian.AppendUint16(row, uint16(stream))
		row = binary.BigEndian.AppendUint32(row, uint32(size))
		parts = append(parts, bytes.NewReader(row), content)
	}
	trailer := binary.BigEndian.AppendUint16(nil, 0xffff) // -1 fields: the end
	return io.MultiReader(append(parts, bytes.NewReader(trailer))...), nil
}

// writeStaged runs a result write with its large outputs streamed, in one
// transaction: it streams the staged outputs into the staging table
// (COPY), then runs the result statement (stagedCompleteSQL with args,
// completeArgs' values) and what more queues after it (the claim of the
// next order) in one batch, hands their results to read in order, and
// commits. The guards are completeSQL's: a result refused by the attempt
// guard writes nothing, and the staged rows go with the transaction.
func (s *Store) writeStaged(ctx context.Context, f Finish, args []any, more func(*pgx.Batch), read func(pgx.BatchResults) error) (err error) {
	r, err := stageReader(f)
	if err != nil {
		return err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			// Best effort: a connection left in a transaction is
			// destroyed by the pool rather than reused.
			_ = tx.Rollback(ctx)
		}
	}()
	if _, err := tx.Exec(ctx, stageTableSQL); err != nil {
		return fmt.Errorf("create the staging table: %w", err)
	}
	if _, err := tx.Conn().PgConn().CopyFrom(ctx, r, stageCopySQL); err != nil {
		return fmt.Errorf("stage outputs: %w", err)
	}
	b := &pgx.Batch{}
	stmt := stagedCompleteSQL
	if f.Record != nil {
		stmt = stagedCompleteRecordSQL
	}
	b.Queue(stmt, stagedArgs(args, f)...)
	if more != nil {
		more(b)
	}
	br := tx.SendBatch(ctx, b)
	err = read(br)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
