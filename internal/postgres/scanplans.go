package postgres

import (
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// connScanPlans are the scan plans scanOrder used last on one connection,
// by column: pgx builds a plan per column for every query (Rows.Scan;
// pgtype.Map keeps its encode plans, not its scan plans), about twenty
// allocations per order read. A plan is used again only for the same
// column type, format and target type, the inputs pgx builds it from; it
// is built from the connection's own type map, so it scans as pgx's
// would, and used only by the one goroutine that holds the connection,
// as pgx uses its own.
type connScanPlans struct {
	m     *pgtype.Map
	cols  []planKey
	plans []pgtype.ScanPlan

	// inserted are the plans of the insert's two returned columns
	// (insertedScan), apart from the order scan's, whose first columns
	// are of other types: on the API's connections the two alternate.
	inserted *connScanPlans
}

type planKey struct {
	oid    uint32
	format int16
	target reflect.Type
}

// plan is the plan for column i of fd's type and format into dst.
func (c *connScanPlans) plan(i int, fd *pgconn.FieldDescription, dst any) pgtype.ScanPlan {
	k := planKey{fd.DataTypeOID, fd.Format, reflect.TypeOf(dst)}
	for len(c.cols) <= i {
		c.cols = append(c.cols, planKey{})
		c.plans = append(c.plans, nil)
	}
	if c.plans[i] == nil || c.cols[i] != k {
		c.cols[i], c.plans[i] = k, c.m.PlanScan(k.oid, k.format, dst)
	}
	return c.plans[i]
}

// scanPlans holds the connScanPlans of each open connection of a pool
// made by Open, by the connection's type map: added when it connects
// (keepScanPlans), removed before it closes (dropScanPlans).
var scanPlans sync.Map // *pgtype.Map → *connScanPlans

// scanPlansOf is m's connection's plans; nil when it keeps none.
func scanPlansOf(m *pgtype.Map) *connScanPlans {
	if c, ok := scanPlans.Load(m); ok {
		return c.(*connScanPlans)
	}
	return nil
}

func keepScanPlans(c *pgx.Conn) {
	m := c.TypeMap()
	scanPlans.Store(m, &connScanPlans{m: m, inserted: &connScanPlans{m: m}})
}

func dropScanPlans(c *pgx.Conn) { scanPlans.Delete(c.TypeMap()) }

// insertedScan scans what InsertOrder's statement returns (submitted_at,
// expires_at) into dst with the plans its connection keeps for it
// (connScanPlans.inserted). pgx's own Scan built both plans anew for
// every order, seven allocations of each submission's
// (docs/benchmarks.md, "The async submit, counted again"). On a
// connection that keeps no plans it is pgx's Scan.
type insertedScan struct {
	dst  [2]any
	self [1]any // Scan's argument list (a slice of its own would be an allocation)
}

// scanInto makes s the scanner of the two times into submittedAt and
// expiresAt, and returns Scan's argument list for it.
func (s *insertedScan) scanInto(submittedAt *time.Time, expiresAt **time.Time) []any {
	s.dst = [2]any{submittedAt, expiresAt}
	s.self[0] = s
	return s.self[:]
}

func (s *insertedScan) ScanRow(rows pgx.Rows) error {
	var c *connScanPlans
	if conn := rows.Conn(); conn != nil {
		if p := scanPlansOf(conn.TypeMap()); p != nil {
			c = p.inserted
		}
	}
	if c == nil {
		return rows.Scan(s.dst[:]...)
	}
	fds, values := rows.FieldDescriptions(), rows.RawValues()
	if len(fds) != len(values) {
		return fmt.Errorf("number of field descriptions must equal number of values, got %d and %d", len(fds), len(values))
	}
	if len(fds) != len(s.dst) {
		return fmt.Errorf("number of field descriptions must equal number of destinations, got %d and %d", len(fds), len(s.dst))
	}
	for i, dst := range s.dst {
		if err := c.plan(i, &fds[i], dst).Scan(values[i], dst); err != nil {
			return pgx.ScanArgError{ColumnIndex: i, FieldName: fds[i].Name, Err: err}
		}
	}
	return nil
}
