-- +goose Up
-- An order's pending inputs (env, stdin, a runbook's script, an action's
-- secret values) and a runbook run's delegation are erased when the order
-- becomes terminal by one BEFORE UPDATE trigger, in place of three (00006,
-- 00007, 00011) that did the same between them.
--
-- Every UPDATE of orders reads and compiles the WHEN clause of each row
-- trigger on UPDATE OF status, from its text, whether or not the trigger
-- fires (docs/benchmarks.md, "PostgreSQL's CPU per sync order, profiled":
-- 4 % of PostgreSQL's CPU per sync order for the WHEN clauses of all
-- statements). The claim and the result of every order read five, three of
-- them these triggers', none of which fires for an order without pending
-- inputs; they read three now. An order with inputs calls one function
-- instead of up to three.
--
-- It stays a BEFORE trigger: the row is written once, already erased, and
-- what a terminal UPDATE returns is what was written. (An AFTER trigger
-- would spare the row lock PostgreSQL takes before any BEFORE ROW UPDATE
-- trigger, but the foreign key of the order's event then takes that lock
-- instead, one WAL record either way, and each order with inputs would
-- write its row a second time: docs/decisions.md, nineteenth round.)
-- It runs as the tables' owner on a fixed search_path, as orders_erase_script
-- did (00011): a worker's role cannot delete delegations itself.
-- +goose StatementBegin
CREATE FUNCTION orders_erase() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind = 'script' OR NEW.script IS NOT NULL THEN
        DELETE FROM runbook_delegations WHERE order_id = NEW.id;
    END IF;
    NEW.env := NULL;
    NEW.stdin := NULL;
    NEW.script := NULL;
    NEW.action_secrets := NULL;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION orders_erase() SECURITY DEFINER SET search_path = %I, pg_temp', current_schema());
END
$$;
-- +goose StatementEnd

CREATE TRIGGER orders_erase BEFORE UPDATE OF status ON orders
    FOR EACH ROW WHEN (NEW.status IN ('succeeded','failed','timed_out','killed','canceled','interrupted','rejected','expired')
        AND (NEW.env IS NOT NULL OR NEW.stdin IS NOT NULL OR NEW.script IS NOT NULL
             OR NEW.action_secrets IS NOT NULL OR NEW.kind = 'script'))
    EXECUTE FUNCTION orders_erase();

DROP TRIGGER orders_erase_inputs ON orders;
DROP TRIGGER orders_erase_script ON orders;
DROP TRIGGER orders_erase_action_secrets ON orders;
DROP FUNCTION orders_erase_inputs();
DROP FUNCTION orders_erase_script();
DROP FUNCTION orders_erase_action_secrets();

-- +goose Down
DROP TRIGGER orders_erase ON orders;
DROP FUNCTION orders_erase();

-- +goose StatementBegin
CREATE FUNCTION orders_erase_script() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('succeeded','failed','timed_out','killed','canceled','interrupted','rejected','expired') THEN
        NEW.script := NULL;
        DELETE FROM runbook_delegations WHERE order_id = NEW.id;
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER orders_erase_script BEFORE UPDATE OF status ON orders
    FOR EACH ROW WHEN (NEW.script IS NOT NULL OR NEW.kind = 'script')
    EXECUTE FUNCTION orders_erase_script();

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

CREATE TRIGGER orders_erase_action_secrets BEFORE UPDATE OF status ON orders
    FOR EACH ROW WHEN (NEW.action_secrets IS NOT NULL)
    EXECUTE FUNCTION orders_erase_action_secrets();

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
    EXECUTE format('ALTER FUNCTION orders_erase_script() SECURITY DEFINER SET search_path = %I, pg_temp', current_schema());
END
$$;
-- +goose StatementEnd
