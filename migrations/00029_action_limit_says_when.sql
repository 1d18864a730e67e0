-- +goose Up
-- The action limit's refusal said how many seconds to wait (HINT) but
-- not until when, nor, for concurrent_per_host, which run holds the
-- slot. DETAIL now says it: `retry_at=<UTC instant>` for runs per
-- window, computed by the statement that refuses from the same clock;
-- `held_by=<order id>` (the oldest of the action's runs queued or
-- running on the host) for concurrent_per_host. internal/postgres reads
-- it into the 429's details. Nothing changes on the accepted path.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION orders_action_limit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    runs   int    := coalesce((NEW.action_limit->>'runs')::int, 0);
    per_ms bigint := coalesce((NEW.action_limit->>'per_ms')::bigint, 0);
    conc   int    := coalesce((NEW.action_limit->>'concurrent_per_host')::int, 0);
    n      bigint;
    nth    timestamptz;
    holder uuid;
BEGIN
    -- The action's row, locked until the inserting transaction ends. A
    -- second insert of a new action's row waits for the first to commit,
    -- then locks it.
    INSERT INTO action_locks (action) VALUES (NEW.action) ON CONFLICT DO NOTHING;
    PERFORM 1 FROM action_locks WHERE action = NEW.action FOR UPDATE;
    -- Looked up once the lock is held: a run with the same key that
    -- held it first has committed (or rolled back) by now, and this
    -- statement sees it. Looked up before, the second of two inserts
    -- with one key (a double submit, a retry racing its first try)
    -- found none, waited, then counted the first's run against the
    -- limit and was refused although its request was accepted.
    IF NEW.idempotency_key IS NOT NULL AND EXISTS (
        SELECT 1 FROM orders WHERE principal = NEW.principal AND idempotency_key = NEW.idempotency_key) THEN
        RETURN NEW; -- a retry: ON CONFLICT answers with the first order
    END IF;
    IF conc > 0 THEN
        SELECT count(*) INTO n FROM active_orders
        WHERE action = NEW.action AND host = NEW.host;
        IF n >= conc THEN
            -- No time to give (a run ends when it ends): DETAIL names
            -- the oldest run holding a slot (ids sort by submission),
            -- the one to watch. Looked up only to refuse, under the
            -- action's lock: an accepted run pays nothing for it.
            SELECT id INTO holder FROM active_orders
            WHERE action = NEW.action AND host = NEW.host ORDER BY id LIMIT 1;
            RAISE EXCEPTION USING ERRCODE = 'OR429', HINT = '1',
                DETAIL = 'held_by=' || holder::text,
                MESSAGE = format('action %s already has %s run(s) queued or running on host %s (at most %s at a time)',
                                 NEW.action, n, NEW.host, conc);
        END IF;
    END IF;
    IF runs > 0 AND per_ms > 0 THEN
        SELECT submitted_at INTO nth FROM orders
        WHERE action = NEW.action AND submitted_at > clock_timestamp() - per_ms * interval '1 millisecond'
        ORDER BY submitted_at DESC OFFSET runs - 1 LIMIT 1;
        IF FOUND THEN
            -- DETAIL is the instant the oldest counted run leaves the
            -- window, read by the statement that refuses (no second
            -- round trip, no clock but this one): HINT is its seconds.
            RAISE EXCEPTION USING ERRCODE = 'OR429',
                DETAIL = 'retry_at=' || to_char((nth + per_ms * interval '1 millisecond') AT TIME ZONE 'UTC',
                                                'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
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
    -- The action's row, locked until the inserting transaction ends. A
    -- second insert of a new action's row waits for the first to commit,
    -- then locks it.
    INSERT INTO action_locks (action) VALUES (NEW.action) ON CONFLICT DO NOTHING;
    PERFORM 1 FROM action_locks WHERE action = NEW.action FOR UPDATE;
    -- Looked up once the lock is held: a run with the same key that
    -- held it first has committed (or rolled back) by now, and this
    -- statement sees it. Looked up before, the second of two inserts
    -- with one key (a double submit, a retry racing its first try)
    -- found none, waited, then counted the first's run against the
    -- limit and was refused although its request was accepted.
    IF NEW.idempotency_key IS NOT NULL AND EXISTS (
        SELECT 1 FROM orders WHERE principal = NEW.principal AND idempotency_key = NEW.idempotency_key) THEN
        RETURN NEW; -- a retry: ON CONFLICT answers with the first order
    END IF;
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

