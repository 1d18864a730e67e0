-- +goose Up
-- A host an admin put in maintenance (orderly hosts --maintenance on,
-- POST /v1/hosts/{host}/maintenance): while its row is here every API
-- replica refuses new orders for it (409 host_in_maintenance) before
-- anything is queued; orders already queued or running are left alone.
-- Each replica reads the table once a second, never per order
-- (intake.Service's maintenance cache).
CREATE TABLE host_maintenance (
    host   text PRIMARY KEY,
    reason text NOT NULL DEFAULT '',
    since  timestamptz NOT NULL DEFAULT now(),
    by     text NOT NULL
);

-- +goose Down
DROP TABLE host_maintenance;
