-- +goose Up
-- The publish generation: raised by the API after it clears publish
-- marks, and copied to a key in NATS (internal/queue/restoremark.go). A
-- database restored from a backup holds a lower one than NATS saw, which
-- is how the API knows that an order the backup holds in unpublished may
-- have been published and run since (docs/deploy.md, "Backup and
-- restore"). One row.
CREATE TABLE restore_mark (
    one        boolean     PRIMARY KEY DEFAULT true CHECK (one),
    generation bigint      NOT NULL,
    marked_at  timestamptz NOT NULL
);
INSERT INTO restore_mark (generation, marked_at) VALUES (0, now());

-- +goose Down
DROP TABLE restore_mark;
