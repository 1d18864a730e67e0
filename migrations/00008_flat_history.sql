-- +goose Up
-- Queries about a host's active orders (its queue depth, its running order,
-- its queue as GET /v1/hosts/{host} and the compat surfaces list it) used
-- orders_host_id or orders_status_id, whose entries for a host or a status
-- grow with history: at 1M finished orders a queue depth read ~160k index
-- entries (27 ms, docs/benchmarks.md). This index holds only the queued and
-- running orders, so those reads cost what the queue holds, whatever the
-- history; a finished row version is not entered in it.
CREATE INDEX orders_active_host ON orders (host, status, id) WHERE status IN ('queued', 'running');

-- +goose Down
DROP INDEX orders_active_host;
