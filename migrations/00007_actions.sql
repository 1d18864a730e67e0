-- +goose Up
-- An action runs as an order of kind 'action' (docs/actions.md). The order
-- records the action's name and the values of its params, which stay as
-- history; the values of secret params travel in `action_secrets` like env
-- values and stdin do, and are erased when the order is terminal (only
-- their names stay). `action_limit` is the run limit the API applied; the
-- orders_action_limit trigger enforces it at the insert.
ALTER TABLE orders
    ADD COLUMN action              text,
    ADD COLUMN action_params       jsonb,
    ADD COLUMN action_secrets      jsonb,
    ADD COLUMN action_secret_names text[],
    ADD COLUMN action_limit        jsonb;

-- An action's history is its orders, newest first; the limit counts its
-- runs in a window and its active runs per host.
CREATE INDEX orders_action_id ON orders (action, id DESC) WHERE action IS NOT NULL;
CREATE INDEX orders_action_submitted ON orders (action, submitted_at) WHERE action IS NOT NULL;
CREATE INDEX orders_action_active ON orders (action, host)
    WHERE action IS NOT NULL AND status IN ('queued', 'running');

-- +goose StatementBegin
CREATE FUNCTION orders_erase_action_secrets() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('succeeded','failed','timed_out','killed','canceled','interrupted','rejected','expired') THEN
        NEW.action_secrets := NULL;
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

-- Every path that ends an order (result, cancel, expiry, takeover) goes
-- through here, whichever it was.
CREATE TRIGGER orders_erase_action_secrets BEFORE UPDATE OF status ON orders
    FOR EACH ROW WHEN (NEW.action_secrets IS NOT NULL)
    EXECUTE FUNCTION orders_erase_action_secrets();

-- orders_action_limit refuses an action order over its run limit: more than
-- `runs` runs of the action within `per_ms` across the fleet, or
-- `concurrent_per_host` queued or running on the order's host. An
-- advisory lock per action serializes the check and the insert across API
-- replicas: the lock is held until the inserting transaction ends, and each
-- query here takes a fresh snapshot (READ COMMITTED), so it sees every run
-- committed before it got the lock. The refusal is SQLSTATE OR429 with the
-- seconds to wait in HINT (internal/postgres maps it to rate_limited).
-- +goose StatementBegin
CREATE FUNCTION orders_action_limit() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE TRIGGER orders_action_limit BEFORE INSERT ON orders
    FOR EACH ROW WHEN (NEW.action_limit IS NOT NULL)
    EXECUTE FUNCTION orders_action_limit();

-- action_runs is every run of every action, with the values of its
-- non-secret params and the names of the secret ones.
CREATE VIEW action_runs AS
SELECT action, action_params, action_secret_names, id, host, status, exit_code, signal, error, principal,
       submitted_at, started_at, finished_at, duration_ms
FROM orders
WHERE kind = 'action';

-- +goose Down
DROP VIEW action_runs;
DROP TRIGGER orders_action_limit ON orders;
DROP FUNCTION orders_action_limit();
DROP TRIGGER orders_erase_action_secrets ON orders;
DROP FUNCTION orders_erase_action_secrets();
DROP INDEX orders_action_active;
DROP INDEX orders_action_submitted;
DROP INDEX orders_action_id;
ALTER TABLE orders DROP COLUMN action_limit, DROP COLUMN action_secret_names, DROP COLUMN action_secrets,
    DROP COLUMN action_params, DROP COLUMN action;
