package postgres

import (
	"reflect"
	"sync"

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
	scanPlans.Store(c.TypeMap(), &connScanPlans{m: c.TypeMap()})
}

func dropScanPlans(c *pgx.Conn) { scanPlans.Delete(c.TypeMap()) }
