-- +goose Up
-- A worker may connect with a role of its own (docs/sql.md, "A role for
-- workers") that updates only the columns a claim, a result, a requeue and
-- a takeover write. Two things stood in the way:
--
--   * The pending env and stdin were erased by the result statement itself
--     (env = NULL, stdin = NULL), so the worker needed UPDATE on them, and
--     with it the power to write any env (LD_PRELOAD=…) or stdin into
--     another host's queued order. They are erased here now, like the
--     script and the action secrets: the worker never writes them.
--   * The triggers that keep active_orders and drop a runbook's delegation
--     ran with the rights of whoever updated the order, so the worker would
--     have needed to write active_orders and delete delegations at will.
--     They run with the rights of their owner (the tables' owner) now, on a
--     fixed search_path that ends with pg_temp, so a temporary table of the
--     session cannot stand in for theirs.

-- +goose StatementBegin
CREATE FUNCTION orders_erase_inputs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.env := NULL;
    NEW.stdin := NULL;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER orders_erase_inputs BEFORE UPDATE OF status ON orders
    FOR EACH ROW WHEN ((NEW.env IS NOT NULL OR NEW.stdin IS NOT NULL)
        AND NEW.status IN ('succeeded','failed','timed_out','killed','canceled','interrupted','rejected','expired'))
    EXECUTE FUNCTION orders_erase_inputs();

-- +goose StatementBegin
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION orders_track_active() SECURITY DEFINER SET search_path = %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION orders_erase_script() SECURITY DEFINER SET search_path = %I, pg_temp', current_schema());
END
$$;
-- +goose StatementEnd

-- +goose Down
ALTER FUNCTION orders_erase_script() SECURITY INVOKER RESET search_path;
ALTER FUNCTION orders_track_active() SECURITY INVOKER RESET search_path;
DROP TRIGGER orders_erase_inputs ON orders;
DROP FUNCTION orders_erase_inputs();
