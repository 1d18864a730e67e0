-- The orderly_worker role of docs/sql.md ("A role for workers") and one
-- login in it, for the deployments that create them in a step after
-- `orderly migrate up`: the worker-role service of docker-compose.yaml and
-- the role container of deploy/k8s/migrate-job.yaml. It runs on every
-- migration: it creates the roles only when they are missing, grants again
-- (a grant already held is no change) and sets the login's password from
-- the file, so a new password there reaches the database on the next run.
--
--   psql -X -v ON_ERROR_STOP=1 -d orderly -v login=orderly_worker_fleet \
--        -v password_file=/run/secrets/worker_pg_password -f worker-role.sql
--
-- Run it as a superuser, or as the owner of orderly's tables with
-- CREATEROLE (and of the schema, for its REVOKE: docs/sql.md). The lines between the two markers below are docs/sql.md's
-- block without its CREATE ROLE: TestWorkerRoleSQLIsTheDocs fails when
-- they differ, so copy the block here when it changes.
\set ON_ERROR_STOP on
\set password `cat :'password_file'`
BEGIN;
-- A missing or empty file would otherwise clear the login's password.
SELECT set_config('orderly.worker_password_length', length(:'password')::text, true) \g /dev/null
DO $$
BEGIN
  IF current_setting('orderly.worker_password_length')::int < 16 THEN
    RAISE EXCEPTION 'the worker login''s password file is missing, empty or shorter than 16 characters';
  END IF;
END
$$;
-- In another database (psql's default is the one named as the user, as
-- postgres) the grants below failed on "null values cannot be formatted
-- as an SQL identifier", naming nothing to change.
DO $$
BEGIN
  IF to_regclass('public.orders') IS NULL THEN
    RAISE EXCEPTION 'database % has no orderly tables: run this file in orderly''s database (psql -d orderly, the database of database_url), after orderly migrate up', current_database();
  END IF;
END
$$;
SELECT 'CREATE ROLE orderly_worker NOLOGIN'
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orderly_worker') \gexec
-- docs/sql.md, "A role for workers", from here:
GRANT USAGE ON SCHEMA public TO orderly_worker;
-- Only orderly's own role (the tables' owner) creates in the schema, as
-- PostgreSQL 15 has it: before 15 (and in a database upgraded from then)
-- every role may, and a function made there can outrank one orderly's
-- role calls and run with its rights.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
DO $$ BEGIN
  EXECUTE format('GRANT CREATE ON SCHEMA public TO %I',
    (SELECT tableowner FROM pg_tables WHERE schemaname = 'public' AND tablename = 'orders'));
END $$;
GRANT SELECT ON goose_db_version, hosts, active_orders, cancel_requests, order_processes TO orderly_worker;
-- Of the API processes' presence, what a claim reads (not their hostnames
-- and pids); the REVOKE takes back the whole table an older block gave.
REVOKE SELECT ON api_presence FROM orderly_worker;
GRANT SELECT (instance, alive_until) ON api_presence TO orderly_worker;
GRANT SELECT (id, batch_id, kind, host, status, command, args, env_names, env, stdin,
  stdout_encode, stderr_encode, capture_stdout, capture_stderr, timeout_ms, run_as,
  dry_run, idempotent, expires_at, max_output, principal, source, correlation_id,
  idempotency_key, policy, submitted_at, started_at, finished_at, attempt, stream_seq,
  worker, exit_code, signal, duration_ms, error,
  stdout, stdout_bytes, stdout_truncated, stdout_sha256,
  stderr, stderr_bytes, stderr_truncated, stderr_sha256, processes,
  runbook, runbook_sha256, script,
  action, action_params, action_secrets, action_secret_names, waiter, parent_run) ON orders TO orderly_worker;
GRANT SELECT (order_id) ON runbook_delegations TO orderly_worker;
GRANT UPDATE (status, attempt, started_at, stream_seq, worker, finished_at, exit_code, signal,
  duration_ms, error, stdout, stdout_bytes, stdout_truncated, stdout_sha256,
  stderr, stderr_bytes, stderr_truncated, stderr_sha256, processes) ON orders TO orderly_worker;
GRANT INSERT ON order_events TO orderly_worker;
-- Whether an idempotent order was requeued before (a takeover requeues
-- it once): the events' order and type, its hosts' rows only.
GRANT SELECT (order_id, type) ON order_events TO orderly_worker;
GRANT USAGE ON SEQUENCE order_events_id_seq TO orderly_worker;
GRANT INSERT ON order_processes TO orderly_worker;
GRANT UPDATE (last_seen, reaped_at, reaped_by, reap) ON order_processes TO orderly_worker;
GRANT INSERT (host, version, instance, owner, owner_epoch, owner_pid, owner_start, owner_boot, owned_at),
  UPDATE (version, instance, last_seen, owner, owner_epoch, owner_pid, owner_start, owner_boot, owned_at)
  ON hosts TO orderly_worker;
-- to here.
SELECT format('CREATE ROLE %I LOGIN IN ROLE orderly_worker', :'login')
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'login') \gexec
-- A login made by hand before may lack the membership.
SELECT format('GRANT orderly_worker TO %I', :'login')
  WHERE NOT pg_has_role(:'login', 'orderly_worker', 'MEMBER') \gexec
ALTER ROLE :"login" LOGIN PASSWORD :'password';
COMMIT;
