-- +goose Up
-- Row security for workers' logins (docs/sql.md, "A role for workers").
-- The orderly_worker role's column grants keep a worker from creating an
-- order or changing what one runs, but it could still read every host's
-- orders (pending env, stdin, scripts and action secrets included) and
-- write the status and result of any of them. A login listed here is
-- confined to its hosts' rows: their orders, events, process records,
-- cancel requests, active orders and host rows. A login not listed keeps
-- the rights its grants give it. The tables' owner (orderly's own role,
-- which the API uses) is exempt from row security, so the API pays
-- nothing for it; other roles (the auditor's) see every row, through one
-- policy that allows all and one that restricts only listed logins.
CREATE TABLE worker_logins (
    login name NOT NULL,
    host  text NOT NULL,
    PRIMARY KEY (login, host)
);

-- The hosts login is confined to, or NULL when it is not listed. It runs
-- as its owner, so no role needs to read worker_logins itself; policies
-- call it once per statement, as an initplan: (SELECT ...). PL/pgSQL,
-- not SQL: a SQL function that cannot be inlined (SECURITY DEFINER is
-- not) plans its query again on every call, several times per order,
-- which took a worker's backlog 15 % slower; PL/pgSQL keeps the plan for
-- the session. array_agg is the catalog's by name: where a login may
-- create in the schema, its array_agg(text) would match host closer than
-- array_agg(anynonarray) and run with the owner's rights.
-- +goose StatementBegin
DO $$
BEGIN
    EXECUTE format($f$
        CREATE FUNCTION worker_login_hosts(login name) RETURNS text[]
        LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = %I, pg_temp AS
        'BEGIN RETURN (SELECT pg_catalog.array_agg(host) FROM worker_logins WHERE worker_logins.login = $1); END'
    $f$, current_schema());
END
$$;
-- +goose StatementEnd

ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
ALTER TABLE active_orders ENABLE ROW LEVEL SECURITY;
ALTER TABLE hosts ENABLE ROW LEVEL SECURITY;
ALTER TABLE order_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE order_processes ENABLE ROW LEVEL SECURITY;
ALTER TABLE cancel_requests ENABLE ROW LEVEL SECURITY;

CREATE POLICY everyone ON orders USING (true) WITH CHECK (true);
CREATE POLICY everyone ON active_orders USING (true) WITH CHECK (true);
CREATE POLICY everyone ON hosts USING (true) WITH CHECK (true);
CREATE POLICY everyone ON order_events USING (true) WITH CHECK (true);
CREATE POLICY everyone ON order_processes USING (true) WITH CHECK (true);
CREATE POLICY everyone ON cancel_requests USING (true) WITH CHECK (true);

-- The login is the session's, when it is listed: SET ROLE orderly_worker,
-- which its membership allows, changes current_user to a role no row
-- names. current_user counts for a session that is not listed (a pooler's
-- SET ROLE to a listed login).
-- Rows with a host column: that host must be one of the login's.
CREATE POLICY worker_hosts ON orders AS RESTRICTIVE
    USING (host = ANY (coalesce((SELECT coalesce(worker_login_hosts(session_user), worker_login_hosts(current_user))), ARRAY[host])));
CREATE POLICY worker_hosts ON active_orders AS RESTRICTIVE
    USING (host = ANY (coalesce((SELECT coalesce(worker_login_hosts(session_user), worker_login_hosts(current_user))), ARRAY[host])));
CREATE POLICY worker_hosts ON hosts AS RESTRICTIVE
    USING (host = ANY (coalesce((SELECT coalesce(worker_login_hosts(session_user), worker_login_hosts(current_user))), ARRAY[host])));
CREATE POLICY worker_hosts ON cancel_requests AS RESTRICTIVE
    USING (host = ANY (coalesce((SELECT coalesce(worker_login_hosts(session_user), worker_login_hosts(current_user))), ARRAY[host])));
-- Rows of an order: the order must be one the login can see, which the
-- orders policy above decides (the subquery runs with its rights).
CREATE POLICY worker_hosts ON order_events AS RESTRICTIVE
    USING ((SELECT coalesce(worker_login_hosts(session_user), worker_login_hosts(current_user))) IS NULL
        OR EXISTS (SELECT 1 FROM orders o WHERE o.id = order_id));
CREATE POLICY worker_hosts ON order_processes AS RESTRICTIVE
    USING ((SELECT coalesce(worker_login_hosts(session_user), worker_login_hosts(current_user))) IS NULL
        OR EXISTS (SELECT 1 FROM orders o WHERE o.id = order_id));

-- +goose Down
DROP POLICY worker_hosts ON order_processes;
DROP POLICY worker_hosts ON order_events;
DROP POLICY worker_hosts ON cancel_requests;
DROP POLICY worker_hosts ON hosts;
DROP POLICY worker_hosts ON active_orders;
DROP POLICY worker_hosts ON orders;
DROP POLICY everyone ON cancel_requests;
DROP POLICY everyone ON order_processes;
DROP POLICY everyone ON order_events;
DROP POLICY everyone ON hosts;
DROP POLICY everyone ON active_orders;
DROP POLICY everyone ON orders;
ALTER TABLE cancel_requests DISABLE ROW LEVEL SECURITY;
ALTER TABLE order_processes DISABLE ROW LEVEL SECURITY;
ALTER TABLE order_events DISABLE ROW LEVEL SECURITY;
ALTER TABLE hosts DISABLE ROW LEVEL SECURITY;
ALTER TABLE active_orders DISABLE ROW LEVEL SECURITY;
ALTER TABLE orders DISABLE ROW LEVEL SECURITY;
DROP FUNCTION worker_login_hosts(name);
DROP TABLE worker_logins;
