-- +goose Up
-- A runbook runs as an order of kind 'script' (docs/runbooks.md). The order
-- records which runbook and which version of its text it ran; the script
-- body and input files travel in `script` like env values and stdin do, and
-- are erased when the order is terminal.
ALTER TABLE orders
    ADD COLUMN runbook        text,
    ADD COLUMN runbook_sha256 text,
    ADD COLUMN script         bytea;

-- A runbook's history is its orders, newest first; a chain of sub-runbooks
-- shares one correlation id.
CREATE INDEX orders_runbook_id ON orders (runbook, id DESC) WHERE runbook IS NOT NULL;
CREATE INDEX orders_correlation_id ON orders (correlation_id, id DESC) WHERE correlation_id <> '';

-- runbook_delegations holds the short-lived tokens a running script uses to
-- run sub-runbooks: only the token's SHA-256, who it acts for, and the
-- chain it is bound to. A token is good only while its order runs and
-- within the order's timeout (the API checks both against orders); its row
-- goes when the order is terminal.
CREATE TABLE runbook_delegations (
    sha256         bytea       PRIMARY KEY,
    order_id       uuid        NOT NULL,
    principal      text        NOT NULL,
    kind           text        NOT NULL,
    roles          text[]      NOT NULL DEFAULT '{}',
    claims         jsonb       NOT NULL DEFAULT '{}',
    correlation_id text        NOT NULL,
    stack          text[]      NOT NULL,
    hosts          text[]      NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX runbook_delegations_order ON runbook_delegations (order_id);

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

-- Every path that ends an order (result, cancel, expiry, takeover) erases
-- the pending env and stdin itself; the script payload and the delegation
-- go here, in one place, whichever path it was.
CREATE TRIGGER orders_erase_script BEFORE UPDATE OF status ON orders
    FOR EACH ROW WHEN (NEW.script IS NOT NULL OR NEW.kind = 'script')
    EXECUTE FUNCTION orders_erase_script();

-- runbook_runs is every run of every runbook, refused ones included
-- (status 'rejected' with the reason in error).
CREATE VIEW runbook_runs AS
SELECT runbook, runbook_sha256, id, host, status, exit_code, signal, error, principal,
       correlation_id, submitted_at, started_at, finished_at, duration_ms,
       stdout_bytes, stderr_bytes
FROM orders
WHERE kind = 'script';

-- +goose Down
DROP VIEW runbook_runs;
DROP TRIGGER orders_erase_script ON orders;
DROP FUNCTION orders_erase_script();
DROP TABLE runbook_delegations;
DROP INDEX orders_correlation_id;
DROP INDEX orders_runbook_id;
ALTER TABLE orders DROP COLUMN script, DROP COLUMN runbook_sha256, DROP COLUMN runbook;
