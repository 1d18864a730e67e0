-- +goose Up
-- An order's claim and result update its row in place (HOT updates), so
-- neither writes a new entry in any of the orders indexes (docs/benchmarks.md,
-- "HOT updates"). PostgreSQL makes an update HOT only when no column that
-- any index uses, in its key or its predicate, changes, and when the new
-- row version fits in the same page. So:
--
--   * status leaves every index of orders. The questions about active
--     orders (a host's queue, what is due to expire, an action's runs in
--     flight, what a host left running) are answered from active_orders,
--     which holds only the orders that are queued or running, with their
--     status: the size of the queues, whatever the history, and never a
--     join with orders (at 1M orders, counting 100k queued through a join
--     read all of orders: 190 ms). Triggers keep it: a row at the insert,
--     its status at the claim or a requeue (an in-place update too: no
--     index of active_orders has status), none once the order is
--     terminal.
--   * orders leaves a fifth of each page free for the claim's and the
--     result's row versions (pages written from now on).
--
-- A listing by a terminal status (GET /v1/orders?status=failed) reads the
-- history newest first until it has a page: fast for a common status,
-- in proportion to the history for a rare one.
CREATE TABLE active_orders (
    id           uuid        PRIMARY KEY,
    host         text        NOT NULL,
    status       text        NOT NULL,
    expires_at   timestamptz,
    action       text
);
CREATE INDEX active_orders_host ON active_orders (host, id);
CREATE INDEX active_orders_expiry ON active_orders (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX active_orders_action ON active_orders (action, host) WHERE action IS NOT NULL;

INSERT INTO active_orders (id, host, status, expires_at, action)
SELECT id, host, status, expires_at, action FROM orders WHERE status IN ('queued', 'running');

-- +goose StatementBegin
CREATE FUNCTION orders_track_active() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE TRIGGER orders_track_active_insert AFTER INSERT ON orders
    FOR EACH ROW WHEN (NEW.status IN ('queued', 'running'))
    EXECUTE FUNCTION orders_track_active();
-- A change between two terminal statuses (none today) does not fire it.
CREATE TRIGGER orders_track_active_update AFTER UPDATE OF status ON orders
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
        AND (OLD.status IN ('queued', 'running') OR NEW.status IN ('queued', 'running')))
    EXECUTE FUNCTION orders_track_active();
-- Retention deletes only terminal orders; this is for any other delete.
CREATE TRIGGER orders_track_active_delete AFTER DELETE ON orders
    FOR EACH ROW WHEN (OLD.status IN ('queued', 'running'))
    EXECUTE FUNCTION orders_track_active();

-- The action limit counts an action's runs in flight on a host from
-- active_orders (was orders_action_active).
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION orders_action_limit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    runs   int    := coalesce((NEW.action_limit->>'runs')::int, 0);
    per_ms bigint := coalesce((NEW.action_limit->>'per_ms')::bigint, 0);
    conc   int    := coalesce((NEW.action_limit->>'concurrent_per_host')::int, 0);
    n      bigint;
    nth    timestamptz;
BEGIN
    IF NEW.idempotency_key IS NOT NULL AND EXISTS (
        SELECT 1 FROM orders WHERE principal = NEW.principal AND idempotency_key = NEW.idempotency_key) THEN
        RETURN NEW; -- a retry: ON CONFLICT answers with the first order
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('orderly.action:' || NEW.action, 0));
    IF conc > 0 THEN
        SELECT count(*) INTO n FROM active_orders
        WHERE action = NEW.action AND host = NEW.host;
        IF n >= conc THEN
            RAISE EXCEPTION USING ERRCODE = 'OR429', HINT = '1',
                MESSAGE = format('action %s already has %s run(s) queued or running on host %s (at most %s at a time)',
                                 NEW.action, n, NEW.host, conc);
        END IF;
    END IF;
    IF runs > 0 AND per_ms > 0 THEN
        SELECT submitted_at INTO nth FROM orders
        WHERE action = NEW.action AND submitted_at > clock_timestamp() - per_ms * interval '1 millisecond'
        ORDER BY submitted_at DESC OFFSET runs - 1 LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'OR429',
                HINT = greatest(1, ceil(extract(epoch FROM nth + per_ms * interval '1 millisecond' - clock_timestamp())))::text,
                MESSAGE = format('action %s ran %s times in the last %s s (at most %s)', NEW.action, runs, per_ms / 1000, runs);
        END IF;
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

DROP INDEX orders_status_id;
DROP INDEX orders_active_host;
DROP INDEX orders_queued_expiry;
DROP INDEX orders_action_active;
ALTER TABLE orders SET (fillfactor = 80);

-- +goose Down
ALTER TABLE orders RESET (fillfactor);
CREATE INDEX orders_status_id ON orders (status, id DESC);
CREATE INDEX orders_active_host ON orders (host, status, id) WHERE status IN ('queued', 'running');
CREATE INDEX orders_queued_expiry ON orders (expires_at) WHERE status = 'queued' AND expires_at IS NOT NULL;
CREATE INDEX orders_action_active ON orders (action, host)
    WHERE action IS NOT NULL AND status IN ('queued', 'running');
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION orders_action_limit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    runs   int    := coalesce((NEW.action_limit->>'runs')::int, 0);
    per_ms bigint := coalesce((NEW.action_limit->>'per_ms')::bigint, 0);
    conc   int    := coalesce((NEW.action_limit->>'concurrent_per_host')::int, 0);
    n      bigint;
    nth    timestamptz;
BEGIN
    IF NEW.idempotency_key IS NOT NULL AND EXISTS (
        SELECT 1 FROM orders WHERE principal = NEW.principal AND idempotency_key = NEW.idempotency_key) THEN
        RETURN NEW;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('orderly.action:' || NEW.action, 0));
    IF conc > 0 THEN
        SELECT count(*) INTO n FROM orders
        WHERE action = NEW.action AND host = NEW.host AND status IN ('queued', 'running');
        IF n >= conc THEN
            RAISE EXCEPTION USING ERRCODE = 'OR429', HINT = '1',
                MESSAGE = format('action %s already has %s run(s) queued or running on host %s (at most %s at a time)',
                                 NEW.action, n, NEW.host, conc);
        END IF;
    END IF;
    IF runs > 0 AND per_ms > 0 THEN
        SELECT submitted_at INTO nth FROM orders
        WHERE action = NEW.action AND submitted_at > clock_timestamp() - per_ms * interval '1 millisecond'
        ORDER BY submitted_at DESC OFFSET runs - 1 LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'OR429',
                HINT = greatest(1, ceil(extract(epoch FROM nth + per_ms * interval '1 millisecond' - clock_timestamp())))::text,
                MESSAGE = format('action %s ran %s times in the last %s s (at most %s)', NEW.action, runs, per_ms / 1000, runs);
        END IF;
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd
DROP TRIGGER orders_track_active_delete ON orders;
DROP TRIGGER orders_track_active_update ON orders;
DROP TRIGGER orders_track_active_insert ON orders;
DROP FUNCTION orders_track_active();
DROP TABLE active_orders;
