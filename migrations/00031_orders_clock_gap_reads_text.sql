-- +goose Up
-- orders_clock_gap (00019) read the id's 48 bits of time through six
-- uuid_send calls, each of which allocates a 1 KiB buffer. The index
-- predicate pays that once per insert; the statistics object on the
-- function pays it for every row of every ANALYZE's sample, whatever the
-- columns analyzed, and the buffers lived until the ANALYZE ended: at
-- 25,600 orders an ANALYZE of orders took 0.9 – 1.0 s of PostgreSQL's
-- CPU and 46,000 page faults (0.13 – 0.20 s and 2,300 without the
-- statistics object), autovacuum's every minute while the table is small
-- and busy (docs/decisions.md, hB28). The same 48 bits are the id's
-- first twelve hex digits, which uuid_out writes in lower case with a
-- hyphen after the eighth: read as bit(48), they give the same value for
-- every id, so the index orders_off_clock holds the same orders, and the
-- ANALYZE costs about half. The body stays immutable (uuid_out, text and
-- bit are), so PostgreSQL still inlines it into the index's predicate.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION orders_clock_gap(id uuid, submitted_at timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT abs(('x' || left(id::text, 8) || substr(id::text, 10, 4))::bit(48)::bigint
             - floor(extract(epoch FROM submitted_at - timestamptz '1970-01-01 00:00:00+00') * 1000)::bigint)
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION orders_clock_gap(id uuid, submitted_at timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    -- | and << share one precedence in PostgreSQL: each shift in brackets.
    SELECT abs(((get_byte(uuid_send(id), 0)::bigint << 40) | (get_byte(uuid_send(id), 1)::bigint << 32)
              | (get_byte(uuid_send(id), 2)::bigint << 24) | (get_byte(uuid_send(id), 3)::bigint << 16)
              | (get_byte(uuid_send(id), 4)::bigint << 8) | get_byte(uuid_send(id), 5)::bigint)
             - floor(extract(epoch FROM submitted_at - timestamptz '1970-01-01 00:00:00+00') * 1000)::bigint)
$$;
-- +goose StatementEnd
