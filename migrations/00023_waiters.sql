-- +goose Up
-- An order a compat surface runs for a waiting HTTP client (httpexec, a
-- synchronous Vigrid execute, a stage0 execute) names the API process
-- that waits for it: the client never learns its id, so once that
-- process is gone (SIGKILL, OOM, a crash) nobody will read its result.
-- The worker cancels such an order at its claim instead of running it
-- (docs/compat.md, "What a client sees under faults"). NULL for every
-- other order: the claim's test of it is the only cost they pay.
ALTER TABLE orders ADD COLUMN waiter uuid;

-- One row per API process that binds orders to itself, renewed by that
-- process (api/presence.go) and deleted at its orderly stop. It is alive
-- while alive_until is ahead of PostgreSQL's clock, which judges it.
CREATE TABLE api_presence (
    instance    uuid        PRIMARY KEY,
    hostname    text        NOT NULL,
    pid         integer     NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    alive_until timestamptz NOT NULL
);

-- The worker's claim reads both; a database whose workers log in with
-- the role of docs/sql.md ("A role for workers") keeps claiming across
-- this migration.
-- +goose StatementBegin
DO $$
BEGIN
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'orderly_worker') THEN
    GRANT SELECT (waiter) ON orders TO orderly_worker;
    GRANT SELECT ON api_presence TO orderly_worker;
  END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP TABLE api_presence;
ALTER TABLE orders DROP COLUMN waiter;
