-- +goose Up
-- Orders not yet confirmed on JetStream live in their own small table, so
-- confirming a publish is a delete here instead of an update that rewrites
-- the orders row and every one of its index entries (docs/benchmarks.md).
CREATE TABLE unpublished (
    id           uuid        PRIMARY KEY REFERENCES orders (id) ON DELETE CASCADE,
    submitted_at timestamptz NOT NULL
);
INSERT INTO unpublished (id, submitted_at)
SELECT id, submitted_at FROM orders WHERE status = 'queued' AND published_at IS NULL;
DROP INDEX orders_unpublished;
ALTER TABLE orders DROP COLUMN published_at;

-- +goose Down
ALTER TABLE orders ADD COLUMN published_at timestamptz;
UPDATE orders SET published_at = submitted_at WHERE id NOT IN (SELECT id FROM unpublished);
CREATE INDEX orders_unpublished ON orders (submitted_at) WHERE status = 'queued' AND published_at IS NULL;
DROP TABLE unpublished;
