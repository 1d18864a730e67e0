-- +goose Up
CREATE TABLE orders (
    id               uuid PRIMARY KEY,
    batch_id         uuid,
    kind             text        NOT NULL DEFAULT 'exec',
    host             text        NOT NULL,
    status           text        NOT NULL DEFAULT 'queued' CHECK (status IN
                       ('queued','running','succeeded','failed','timed_out','killed',
                        'canceled','interrupted','rejected','expired')),
    command          text        NOT NULL,
    args             text[]      NOT NULL DEFAULT '{}',
    env_names        text[]      NOT NULL DEFAULT '{}',
    -- Pending inputs: env values and stdin travel here until the order is
    -- terminal, then they are erased (history keeps env names only).
    env              jsonb,
    stdin            bytea,
    stdin_bytes      integer     NOT NULL DEFAULT 0,
    stdout_encode    text        NOT NULL DEFAULT '',
    stderr_encode    text        NOT NULL DEFAULT '',
    capture_stdout   boolean     NOT NULL DEFAULT true,
    capture_stderr   boolean     NOT NULL DEFAULT true,
    timeout_ms       bigint      NOT NULL,
    run_as           text        NOT NULL DEFAULT '',
    dry_run          boolean     NOT NULL DEFAULT false,
    idempotent       boolean     NOT NULL DEFAULT false,
    expires_at       timestamptz,
    max_output       bigint      NOT NULL DEFAULT 0,
    principal        text        NOT NULL,
    source           text        NOT NULL DEFAULT 'rest',
    correlation_id   text        NOT NULL DEFAULT '',
    idempotency_key  text,
    policy           jsonb       NOT NULL DEFAULT '{}',
    submitted_at     timestamptz NOT NULL DEFAULT now(),
    published_at     timestamptz,
    started_at       timestamptz,
    finished_at      timestamptz,
    attempt          integer     NOT NULL DEFAULT 0,
    stream_seq       bigint,
    worker           text        NOT NULL DEFAULT '',
    exit_code        integer,
    signal           text,
    duration_ms      bigint,
    error            text,
    stdout           bytea,
    stdout_bytes     bigint,
    stdout_truncated boolean,
    stdout_sha256    bytea,
    stderr           bytea,
    stderr_bytes     bigint,
    stderr_truncated boolean,
    stderr_sha256    bytea
);

-- Keyset pagination is over id (UUIDv7: time-ordered), newest first.
CREATE INDEX orders_host_id ON orders (host, id DESC);
CREATE INDEX orders_status_id ON orders (status, id DESC);
CREATE INDEX orders_principal_id ON orders (principal, id DESC);
CREATE INDEX orders_batch ON orders (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX orders_submitted_at ON orders (submitted_at);
-- The reconciler looks for orders that were committed but never published.
CREATE INDEX orders_unpublished ON orders (submitted_at) WHERE status = 'queued' AND published_at IS NULL;
CREATE UNIQUE INDEX orders_idempotency ON orders (principal, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- order_events is the append-only history of every state change.
CREATE TABLE order_events (
    id       bigserial   PRIMARY KEY,
    order_id uuid        NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    at       timestamptz NOT NULL DEFAULT now(),
    type     text        NOT NULL,
    status   text,
    actor    text        NOT NULL DEFAULT '',
    detail   jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX order_events_order ON order_events (order_id, id);

-- rejections records every refused request, with a redacted request.
CREATE TABLE rejections (
    id        bigserial   PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    principal text        NOT NULL DEFAULT '',
    client_ip text        NOT NULL DEFAULT '',
    source    text        NOT NULL DEFAULT 'rest',
    method    text        NOT NULL DEFAULT '',
    path      text        NOT NULL DEFAULT '',
    status    integer     NOT NULL,
    code      text        NOT NULL,
    reason    text        NOT NULL,
    request   jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX rejections_at ON rejections (at);

-- hosts remembers every worker host ever seen, so offline hosts still list
-- with their last heartbeat; liveness itself lives in the NATS KV bucket.
CREATE TABLE hosts (
    host       text        PRIMARY KEY,
    version    text        NOT NULL DEFAULT '',
    instance   text        NOT NULL DEFAULT '',
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now()
);

-- api_tokens holds tokens created at runtime (serve's admin token); only
-- their SHA-256 is stored.
CREATE TABLE api_tokens (
    name       text        PRIMARY KEY,
    sha256     text        NOT NULL UNIQUE,
    roles      text[]      NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE VIEW recent_failures AS
SELECT host, id, command, args, status, exit_code, signal, error, principal, finished_at
FROM orders
WHERE status IN ('failed','timed_out','killed','interrupted','rejected','expired')
  AND finished_at > now() - interval '7 days';

CREATE VIEW who_ran_what AS
SELECT principal, host, command, args, run_as, status, exit_code, submitted_at, finished_at, id
FROM orders;

-- +goose Down
DROP VIEW who_ran_what;
DROP VIEW recent_failures;
DROP TABLE api_tokens;
DROP TABLE hosts;
DROP TABLE rejections;
DROP TABLE order_events;
DROP TABLE orders;
