-- +goose Up
-- Who put a host in maintenance and who took it out, and when: one row per
-- switch (orderly hosts HOST --maintenance on|off, POST and DELETE
-- /v1/hosts/{host}/maintenance), written by the statement that switches.
-- host_maintenance (00026) holds only the state now: taking a host out
-- deletes its row, with who had put it there. An auditor reads this table
-- (docs/sql.md, "host_maintenance_log"); orderly never reads it. A switch
-- that changes nothing (taking out a host not in maintenance) writes no
-- row; putting one in again writes one with the new reason.
CREATE TABLE host_maintenance_log (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host   text NOT NULL,
    at     timestamptz NOT NULL DEFAULT now(),
    by     text NOT NULL,
    action text NOT NULL CHECK (action IN ('on', 'off')),
    reason text NOT NULL DEFAULT ''
);
CREATE INDEX host_maintenance_log_host ON host_maintenance_log (host, at);

-- +goose Down
DROP TABLE host_maintenance_log;
