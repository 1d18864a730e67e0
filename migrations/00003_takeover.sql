-- +goose Up
-- The host's owner is the fence of the takeover protocol (docs/decisions.md):
-- a worker claims an order only while it is the owner recorded here, and a
-- worker that takes a host over first makes itself the owner. owner_pid,
-- owner_start and owner_boot identify the owner's process, so a successor on
-- the same machine can prove it gone (or end it) before running anything.
ALTER TABLE hosts
    ADD COLUMN owner       text        NOT NULL DEFAULT '',
    ADD COLUMN owner_epoch bigint      NOT NULL DEFAULT 0,
    ADD COLUMN owner_pid   integer     NOT NULL DEFAULT 0,
    ADD COLUMN owner_start bigint      NOT NULL DEFAULT 0,
    ADD COLUMN owner_boot  text        NOT NULL DEFAULT '',
    ADD COLUMN owned_at    timestamptz;

-- order_processes records the process of each attempt as it starts: what a
-- successor needs to find and kill what a dead worker left behind, and the
-- evidence an interrupted order keeps.
CREATE TABLE order_processes (
    order_id   uuid        NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    attempt    integer     NOT NULL,
    worker     text        NOT NULL,
    pid        integer     NOT NULL,
    pgid       integer     NOT NULL,
    start_time bigint      NOT NULL, -- /proc/<pid>/stat starttime, clock ticks since boot
    boot_id    text        NOT NULL,
    machine_id text        NOT NULL DEFAULT '', -- /etc/machine-id: another machine is not a reboot
    pid_ns     bigint      NOT NULL DEFAULT 0,  -- pid namespace inode: pids mean something only in it
    cgroup     text        NOT NULL DEFAULT '',
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now(),
    reaped_at  timestamptz,
    reaped_by  text,
    reap       jsonb,
    PRIMARY KEY (order_id, attempt)
);

-- What is known of an attempt's processes at its end: how their end was
-- verified, and for an interrupted order what its successor found and did.
ALTER TABLE orders ADD COLUMN processes jsonb;

-- +goose Down
ALTER TABLE orders DROP COLUMN processes;
DROP TABLE order_processes;
ALTER TABLE hosts
    DROP COLUMN owner, DROP COLUMN owner_epoch, DROP COLUMN owner_pid,
    DROP COLUMN owner_start, DROP COLUMN owner_boot, DROP COLUMN owned_at;
