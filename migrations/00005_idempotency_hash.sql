-- +goose Up
-- request_sha256 is order.Fingerprint of the request that first used an
-- idempotency key, so a retry that asks for something else is refused
-- (422 idempotency_key_reused) instead of answered with the first order.
-- NULL for orders recorded before this migration: they are not compared.
ALTER TABLE orders ADD COLUMN request_sha256 bytea;

-- The API expires queued orders whose deadline passed (hosts without a
-- worker included); this keeps its periodic look-up off the whole table.
CREATE INDEX orders_queued_expiry ON orders (expires_at) WHERE status = 'queued' AND expires_at IS NOT NULL;

-- +goose Down
DROP INDEX orders_queued_expiry;
ALTER TABLE orders DROP COLUMN request_sha256;
