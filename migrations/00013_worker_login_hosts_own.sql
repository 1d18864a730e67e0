-- +goose Up
-- worker_login_hosts answers only for a login the session may act as: its
-- own login, or a role it is a member of (what SET ROLE allows, which is
-- what the policies' current_user can be). Before, any role could call it
-- with another login's name and read that login's hosts, so a worker's
-- login learnt every host of the fleet. For another login it now answers
-- NULL, as for a login that is not listed.
-- +goose StatementBegin
DO $$
BEGIN
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION worker_login_hosts(login name) RETURNS text[]
        LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = %I, pg_temp AS
        'BEGIN
            IF login <> session_user AND NOT pg_catalog.pg_has_role(session_user, login, ''MEMBER'') THEN
                RETURN NULL;
            END IF;
            RETURN (SELECT pg_catalog.array_agg(host) FROM worker_logins WHERE worker_logins.login = $1);
        END'
    $f$, current_schema());
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
DO $$
BEGIN
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION worker_login_hosts(login name) RETURNS text[]
        LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = %I, pg_temp AS
        'BEGIN RETURN (SELECT pg_catalog.array_agg(host) FROM worker_logins WHERE worker_logins.login = $1); END'
    $f$, current_schema());
END
$$;
-- +goose StatementEnd
