-- +goose Up
-- The row policies of migration 00012 call worker_login_hosts, and a
-- function is PARALLEL UNSAFE unless it says otherwise: a query that
-- names one anywhere runs without parallel workers. Every role but the
-- tables' owner pays the policies, so every query of the auditors' role
-- (docs/sql.md) on orders, active_orders, hosts and cancel_requests ran
-- on one process, the large ones too (a count over a month of 500k
-- orders: 1.4 s against 0.75 s with two workers). The function only
-- reads; RESTRICTED keeps it in the leader, which computes the policies'
-- initplan once and hands the workers its value.
ALTER FUNCTION worker_login_hosts(name) PARALLEL RESTRICTED;

-- +goose Down
ALTER FUNCTION worker_login_hosts(name) PARALLEL UNSAFE;
