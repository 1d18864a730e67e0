-- +goose Up
-- cancel_requests is the record a worker checks before it signals a running
-- order: a control message on NATS only wakes the worker up, and one with no
-- row here is ignored (DESIGN §4.7). It also keeps who asked, when and with
-- which signal, for the order's API view; each request is in order_events
-- too (type cancel_requested). A later request for the same order replaces
-- the row (a SIGTERM escalated to SIGKILL).
CREATE TABLE cancel_requests (
    order_id     uuid        PRIMARY KEY REFERENCES orders (id) ON DELETE CASCADE,
    host         text        NOT NULL,
    actor        text        NOT NULL,
    signal       text        NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE cancel_requests;
