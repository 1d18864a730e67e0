-- +goose Up
-- A successor marks a dead worker's attempt (interrupted, or queued again)
-- and only then reaps its processes. The mark ends the attempt's
-- "running", the only thing a takeover looked for: a successor that died
-- or froze between its mark and the reap, or an API that abandoned the
-- host's orders (DELETE /v1/hosts/{host}?abandon=true) while the machine
-- lived on, left the processes running next to the host's next orders,
-- with nothing in PostgreSQL to find them by. The mark now sets
-- abandoned_at on the attempt's process record, in the mark's own
-- transaction, and the record stays to be reaped until reaped_at is set
-- (the evidence). The trigger runs with its owner's rights: a worker's
-- role may not write the column.
ALTER TABLE order_processes ADD COLUMN abandoned_at timestamptz;
CREATE INDEX order_processes_unreaped ON order_processes (order_id)
    WHERE abandoned_at IS NOT NULL AND reaped_at IS NULL;

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
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION orders_mark_abandoned() SECURITY DEFINER SET search_path = %I, pg_temp', current_schema());
END
$$;
-- +goose StatementEnd

-- A claim (queued → running) and a result (running → a status of its
-- own) do not fire it.
CREATE TRIGGER orders_mark_abandoned AFTER UPDATE OF status ON orders
    FOR EACH ROW WHEN (OLD.status = 'running' AND NEW.status IN ('interrupted', 'queued'))
    EXECUTE FUNCTION orders_mark_abandoned();

-- +goose Down
DROP TRIGGER orders_mark_abandoned ON orders;
DROP FUNCTION orders_mark_abandoned();
DROP INDEX order_processes_unreaped;
ALTER TABLE order_processes DROP COLUMN abandoned_at;
