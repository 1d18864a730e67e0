package postgres

import (
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// scanTimesInUTC makes pgx return every timestamptz in UTC. pgx returns
// them in the process's local zone, so an API started with another TZ
// answered "+13:45" where its neighbours answered "Z": the same instants,
// written differently by each replica, in answers, SSE and the CLI's
// --json. It runs on each new connection (pgxpool's AfterConnect).
func scanTimesInUTC(c *pgx.Conn) {
	c.TypeMap().RegisterType(&pgtype.Type{Name: "timestamptz", OID: pgtype.TimestamptzOID,
		Codec: &pgtype.TimestamptzCodec{ScanLocation: time.UTC}})
}
