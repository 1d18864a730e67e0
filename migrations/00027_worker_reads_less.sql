-- +goose NO TRANSACTION
-- +goose Up
-- What a worker's login reads beyond its own hosts (docs/sql.md, "A role
-- for workers"). Two reads were whole tables:
--
--   * runbook_delegations (00025 grants SELECT (order_id)): a login listed
--     for one host in worker_logins read the id of every runbook run live
--     on every host, and when each started and ended. A sub-runbook's
--     claim needs one answer only: is the run its child waits for still
--     there. Row security now shows a listed login a delegation only when
--     a queued order it can see (its own hosts', the orders policy) names
--     that run as its parent_run. The grant stays, so the claims of the
--     workers already running (the same statement) keep working through
--     this migration in either order of upgrade; the index makes the
--     policy's look-up one probe of the run's few children. Its predicate
--     names parent_run only, which no update changes: one naming status
--     made every claim and result a non-HOT update (an index insert per
--     index of orders, TestClaimAndResultAreHOTUpdates).
--   * api_presence (00023 grants SELECT on the table): every API process's
--     hostname and pid. The claim reads instance and alive_until only.
--     Column grants replace the table's; the claim of an older worker
--     names no other column either.
-- The index is built CONCURRENTLY, outside a transaction (NO TRANSACTION):
-- a plain CREATE INDEX holds a SHARE lock on orders for its whole build,
-- and every submission, claim and result waited for it (8.5 s on a
-- million orders; docs/decisions.md, "A rolling upgrade across the
-- twenty-second round", TestIndexOnOrdersLetsWritersThrough). A build
-- that gave up (lock_timeout: migrations.Apply tries again) leaves an
-- invalid index: renamed (a lock on the index alone) and dropped
-- CONCURRENTLY before the build. A plain DROP INDEX took ACCESS EXCLUSIVE
-- on orders, and waiting for the transaction the build had given up on
-- (a pg_dump's) it held every reader and writer of orders for its
-- lock_timeout at each try (TestIndexLeftInvalidIsDroppedBesideTheTraffic).
-- The first drop is of one an earlier try renamed and could not drop.
-- The policies and grants after the build are one DO block, so one
-- transaction, each part skipped when present.
DROP INDEX CONCURRENTLY IF EXISTS orders_parent_run_invalid;
-- +goose StatementBegin
DO $$
BEGIN
  IF EXISTS (SELECT FROM pg_index WHERE indexrelid = to_regclass('orders_parent_run') AND NOT indisvalid) THEN
    ALTER INDEX orders_parent_run RENAME TO orders_parent_run_invalid;
  END IF;
END
$$;
-- +goose StatementEnd
DROP INDEX CONCURRENTLY IF EXISTS orders_parent_run_invalid;
CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_parent_run ON orders (parent_run) WHERE parent_run IS NOT NULL;

-- +goose StatementBegin
DO $$
BEGIN
  ALTER TABLE runbook_delegations ENABLE ROW LEVEL SECURITY;
  IF NOT EXISTS (SELECT FROM pg_policies WHERE tablename = 'runbook_delegations' AND policyname = 'everyone') THEN
    CREATE POLICY everyone ON runbook_delegations USING (true) WITH CHECK (true);
  END IF;
  IF NOT EXISTS (SELECT FROM pg_policies WHERE tablename = 'runbook_delegations' AND policyname = 'worker_hosts') THEN
    CREATE POLICY worker_hosts ON runbook_delegations AS RESTRICTIVE
        USING ((SELECT coalesce(worker_login_hosts(session_user), worker_login_hosts(current_user))) IS NULL
            OR EXISTS (SELECT 1 FROM orders o WHERE o.parent_run = order_id AND o.status = 'queued'));
  END IF;
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'orderly_worker') THEN
    REVOKE SELECT ON api_presence FROM orderly_worker;
    GRANT SELECT (instance, alive_until) ON api_presence TO orderly_worker;
  END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- The index first, the policies and grants last: a down that gives up
-- part way (a pg_dump's lock outlasting migrations.Rollback's tries)
-- leaves the version at 27, and it left row security off and the
-- workers' table grant back under it, which a `migrate up` (nothing to
-- apply) kept. Given up on now, the drop leaves the index invalid at
-- worst, with 00027's policies in force; `migrate down` run again drops
-- it (TestDownThatGaveUpLeavesThePoliciesOn).
DROP INDEX CONCURRENTLY IF EXISTS orders_parent_run;
-- +goose StatementBegin
DO $$
BEGIN
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'orderly_worker') THEN
    GRANT SELECT ON api_presence TO orderly_worker;
  END IF;
  DROP POLICY IF EXISTS worker_hosts ON runbook_delegations;
  DROP POLICY IF EXISTS everyone ON runbook_delegations;
  ALTER TABLE runbook_delegations DISABLE ROW LEVEL SECURITY;
END
$$;
-- +goose StatementEnd
