-- +goose Up
-- A sub-runbook that its parent run waits for (?wait, or a stage0 execute)
-- names that run: it starts only while the run is still running, the run's
-- delegation (runbook_delegations) still on record. A run ended from
-- outside (its worker killed, a cancel, its timeout) left its child queued
-- on another host, and the child started there later, for nobody, after
-- the step that waited for it had failed (docs/runbooks.md). The worker
-- cancels such a child at its claim instead. NULL for every other order.
ALTER TABLE orders ADD COLUMN parent_run uuid;

-- The claim of a worker whose login has the role of docs/sql.md ("A role
-- for workers") reads the column and whether the parent's delegation is
-- there: the delegation's order id only, never its token's hash or claims.
-- +goose StatementBegin
DO $$
BEGIN
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'orderly_worker') THEN
    GRANT SELECT (parent_run) ON orders TO orderly_worker;
    GRANT SELECT (order_id) ON runbook_delegations TO orderly_worker;
  END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
ALTER TABLE orders DROP COLUMN parent_run;
