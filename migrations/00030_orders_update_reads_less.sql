-- +goose Up
-- Every UPDATE of orders reads the WHEN clause of each row trigger on
-- UPDATE OF status from its stored text (pg_trigger.tgqual, a node tree
-- printed as text: an IN list's array is printed byte by byte) and
-- compiles it, whether or not the trigger fires; the claim and the
-- result of every order are two such UPDATEs. In a backlog's drain
-- (perf of PostgreSQL's backend) the reading of stored node trees was
-- ~7 % of its CPU outside the kernel (docs/decisions.md, "(hC25)").
-- They read 6,048 characters of WHEN clauses in three triggers; they
-- read 3,800 in two now:
--
--   * orders_erase's WHEN names the two statuses that are not terminal
--     instead of the eight that are (3,019 -> 1,944 characters): the
--     status CHECK of orders allows those ten and no other, so the
--     trigger fires for exactly the same rows.
--   * orders_mark_abandoned (00017) is folded into orders_track_active:
--     the mark it sets (running -> interrupted or queued) is an update
--     whose condition orders_track_active_update's WHEN already holds,
--     so one trigger, one WHEN, one call, in the same transaction and
--     with the same owner's rights as before.
--
-- orders_erase stays a BEFORE trigger, and its row lock stays with it:
-- that lock is what the foreign key of the order's event would take
-- otherwise (docs/decisions.md, "(hB9)" and "(hC25)").
DROP TRIGGER orders_erase ON orders;
CREATE TRIGGER orders_erase BEFORE UPDATE OF status ON orders
    FOR EACH ROW WHEN (NEW.status NOT IN ('queued', 'running')
        AND (NEW.env IS NOT NULL OR NEW.stdin IS NOT NULL OR NEW.script IS NOT NULL
             OR NEW.action_secrets IS NOT NULL OR NEW.kind = 'script'))
    EXECUTE FUNCTION orders_erase();

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION orders_track_active() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF OLD.status = 'running' AND NEW.status IN ('interrupted', 'queued') THEN
            -- A successor (or an API abandoning the host) ended a dead
            -- worker's attempt: its processes stay to be reaped (00017).
            UPDATE order_processes SET abandoned_at = now()
            WHERE order_id = NEW.id AND attempt = OLD.attempt AND reaped_at IS NULL;
        END IF;
    END IF;
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

DROP TRIGGER orders_mark_abandoned ON orders;
DROP FUNCTION orders_mark_abandoned();

-- +goose Down
-- +goose StatementBegin
CREATE FUNCTION orders_mark_abandoned() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE order_processes SET abandoned_at = now()
    WHERE order_id = NEW.id AND attempt = OLD.attempt AND reaped_at IS NULL;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

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

-- +goose StatementBegin
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION orders_mark_abandoned() SECURITY DEFINER SET search_path = %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION orders_track_active() SECURITY DEFINER SET search_path = %I, pg_temp', current_schema());
END
$$;
-- +goose StatementEnd

CREATE TRIGGER orders_mark_abandoned AFTER UPDATE OF status ON orders
    FOR EACH ROW WHEN (OLD.status = 'running' AND NEW.status IN ('interrupted', 'queued'))
    EXECUTE FUNCTION orders_mark_abandoned();

DROP TRIGGER orders_erase ON orders;
CREATE TRIGGER orders_erase BEFORE UPDATE OF status ON orders
    FOR EACH ROW WHEN (NEW.status IN ('succeeded','failed','timed_out','killed','canceled','interrupted','rejected','expired')
        AND (NEW.env IS NOT NULL OR NEW.stdin IS NOT NULL OR NEW.script IS NOT NULL
             OR NEW.action_secrets IS NOT NULL OR NEW.kind = 'script'))
    EXECUTE FUNCTION orders_erase();
