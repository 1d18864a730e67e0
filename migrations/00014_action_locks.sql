-- +goose Up
-- The action limit serialized its check and the insert with an advisory
-- lock per action, and any role may take any advisory lock: a session of
-- the auditors' or the workers' role (docs/sql.md) that held
-- pg_advisory_lock(hashtextextended('orderly.action:<name>', 0)) stopped
-- every run of a limited action, on every host, for as long as it kept
-- it. The lock is a row of this table now: locking a row takes UPDATE on
-- its table, which only orderly's own role has (the trigger runs as the
-- API's role, which inserts orders).
CREATE TABLE action_locks (
    action text PRIMARY KEY
);

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
    -- The action's row, locked until the inserting transaction ends. A
    -- second insert of a new action's row waits for the first to commit,
    -- then locks it.
    INSERT INTO action_locks (action) VALUES (NEW.action) ON CONFLICT DO NOTHING;
    PERFORM 1 FROM action_locks WHERE action = NEW.action FOR UPDATE;
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

-- +goose Down
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
DROP TABLE action_locks;
