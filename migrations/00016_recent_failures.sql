-- +goose Up
-- recent_failures selected from orders by status and finished_at, which no
-- index of orders may hold (migration 00009: the claim and the result
-- update the row in place), so it read the whole history: 0.9 s at 1M
-- orders, and more with every day kept. Every finished order has exactly
-- one terminal event, whose status is the order's and whose "at" is its
-- finished_at (the statement that ends an order writes both, from one
-- RETURNING). This index holds the failed ones' terminal events by time,
-- so the view reads the last 7 days of failures and looks each order up by
-- its id: in proportion to its answer, whatever the history (45 ms at 1M
-- orders with 10k failures that week). The orders are still chosen by
-- their own status and finished_at, so the view's rows are the same; the
-- events only say where to look. OFFSET 0 keeps orders to one lookup per
-- event, which the planner would otherwise trade for a scan of it.
CREATE INDEX order_events_failures ON order_events (at)
    WHERE status IN ('failed','timed_out','killed','interrupted','rejected','expired');

CREATE OR REPLACE VIEW recent_failures AS
SELECT o.host, o.id, o.command, o.args, o.status, o.exit_code, o.signal, o.error, o.principal, o.finished_at
FROM (SELECT DISTINCT order_id FROM order_events
      WHERE status IN ('failed','timed_out','killed','interrupted','rejected','expired')
        AND at > now() - interval '7 days') e
CROSS JOIN LATERAL (
    SELECT host, id, command, args, status, exit_code, signal, error, principal, finished_at
    FROM orders
    WHERE id = e.order_id
      AND status IN ('failed','timed_out','killed','interrupted','rejected','expired')
      AND finished_at > now() - interval '7 days'
    OFFSET 0) o;

-- +goose Down
CREATE OR REPLACE VIEW recent_failures AS
SELECT host, id, command, args, status, exit_code, signal, error, principal, finished_at
FROM orders
WHERE status IN ('failed','timed_out','killed','interrupted','rejected','expired')
  AND finished_at > now() - interval '7 days';
DROP INDEX order_events_failures;
