-- +goose Up
-- Less work for PostgreSQL in each order's insert (docs/benchmarks.md,
-- "PostgreSQL's work per order, counted"):
--
--   * The trigger that keeps active_orders inserts an order's row there
--     with a plain INSERT when the order itself is being inserted. With
--     ON CONFLICT every insert was a speculative one: a probe of
--     active_orders_pkey before the insert, a speculative lock, and a
--     second WAL record to confirm the row. A new order's id cannot be in
--     active_orders: orders.id is its primary key, only these triggers
--     write active_orders (they run as its owner; no other role may write
--     it), and the delete trigger removes an order's row with the order.
--     The update branch keeps ON CONFLICT for an order that comes back to
--     queued from a terminal status (no path does that today).
--   * The same trigger deletes an order's publish mark (unpublished) at
--     its claim. That is the rule of the reconciler's ForgetStarted (a
--     mark whose order is not queued needs no republishing), applied in
--     the transaction that makes it true, for the one order a claim
--     takes (so it holds at most one mark's lock: no statement that
--     deletes many marks, the API's batch or an expiry, can wait on it in
--     a cycle; orders that end while queued keep their marks until
--     ForgetStarted, as before). The API's batched delete of the marks
--     it saw confirmed then usually finds them gone on the synchronous
--     path, where the worker claims an order within milliseconds of its
--     publish, and a delete that deletes nothing writes no WAL and waits
--     for no flush: it was a WAL flush for every batch, 0.2 - 0.85 of
--     them per synchronous order.
--   * unpublished loses its foreign key to orders. A mark is inserted in
--     the statement that inserts its order (it cannot name a missing
--     order), and ForgetStarted deletes every mark whose order is not
--     queued in active_orders, an order that no longer exists included,
--     so the key's cascade had nothing left to do. It cost each insert a referential
--     check (a query of orders_pkey with a row lock) and each deleted order
--     a probe of unpublished.
--   * A new database forgets what 00019's ANALYZE said of its empty
--     orders table. That ANALYZE recorded orders as known to be empty
--     (reltuples 0, where a table never analyzed has -1 and the planner
--     assumes ten pages), and with that the planner made the referential
--     checks of order_events, order_processes and cancel_requests
--     (SELECT 1 FROM ONLY orders x WHERE id = $1 FOR KEY SHARE) a scan of
--     all of orders instead of a probe of orders_pkey: each backend keeps
--     that plan until autovacuum next analyzes orders, so in a new
--     database's first minute every event inserted scanned all the orders
--     (counted on the async path: 25.7 buffers per check against 12.6
--     before 00019; the likely cause of the quick bench's async gap after
--     00019, 0.43 -> 0.56 ms of PostgreSQL's CPU per order, which runs on
--     a new database). Emptied by TRUNCATE, the table is again one
--     whose size is unknown. Only when orders has no row, under
--     its exclusive lock: the tables that reference it are then empty too.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION orders_track_active() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.status NOT IN ('queued', 'running') THEN
        DELETE FROM active_orders WHERE id = OLD.id;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO active_orders (id, host, status, expires_at, action)
        VALUES (NEW.id, NEW.host, NEW.status, NEW.expires_at, NEW.action);
    ELSIF OLD.status IN ('queued', 'running') THEN
        UPDATE active_orders SET status = NEW.status WHERE id = NEW.id;
        IF NEW.status = 'running' THEN -- a claim
            -- SKIP LOCKED: a mark the API's batch is deleting right now is
            -- left to it, and the claim never waits for that batch.
            DELETE FROM unpublished WHERE id =
                (SELECT u.id FROM unpublished u WHERE u.id = NEW.id FOR UPDATE SKIP LOCKED);
        END IF;
    ELSE
        INSERT INTO active_orders (id, host, status, expires_at, action)
        VALUES (NEW.id, NEW.host, NEW.status, NEW.expires_at, NEW.action)
        ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status;
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- CREATE OR REPLACE resets what 00011 set: the trigger runs as the
-- tables' owner, on a search_path that ends with pg_temp.
-- +goose StatementBegin
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION orders_track_active() SECURITY DEFINER SET search_path = %I, pg_temp', current_schema());
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM orders) THEN
        LOCK TABLE orders IN ACCESS EXCLUSIVE MODE;
        IF NOT EXISTS (SELECT 1 FROM orders) THEN
            TRUNCATE orders, order_events, order_processes, cancel_requests, unpublished;
        END IF;
    END IF;
END
$$;
-- +goose StatementEnd

ALTER TABLE unpublished DROP CONSTRAINT unpublished_id_fkey;

-- +goose Down
DELETE FROM unpublished u WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = u.id);
ALTER TABLE unpublished ADD CONSTRAINT unpublished_id_fkey FOREIGN KEY (id) REFERENCES orders (id) ON DELETE CASCADE;

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION orders_track_active() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.status NOT IN ('queued', 'running') THEN
        DELETE FROM active_orders WHERE id = OLD.id;
    ELSIF TG_OP = 'UPDATE' AND OLD.status IN ('queued', 'running') THEN
        UPDATE active_orders SET status = NEW.status WHERE id = NEW.id;
    ELSE
        INSERT INTO active_orders (id, host, status, expires_at, action)
        VALUES (NEW.id, NEW.host, NEW.status, NEW.expires_at, NEW.action)
        ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status;
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION orders_track_active() SECURITY DEFINER SET search_path = %I, pg_temp', current_schema());
END
$$;
-- +goose StatementEnd
