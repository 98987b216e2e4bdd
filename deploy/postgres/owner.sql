-- language=PostgreSQL
-- Makes an ordinary role the owner of the current database, for the service's DATABASE_URL.
--
-- Run once by a superuser, connected to the service's (new, empty) database, with two session
-- settings: `tenant_setup.owner` (the role's name) and `tenant_setup.password` (its password;
-- empty: leave it as it is). Compose runs it when its PostgreSQL volume is created
-- (deploy/postgres/create-owner.sh), `scripts/dev` when it creates its database, and
-- `tests/integration/rls.rs` checks that the service migrates and runs as such an owner.
-- Running it again changes nothing but the password.
--
-- The owner gets no SUPERUSER, BYPASSRLS, CREATEROLE or CREATEDB: row-level security with
-- FORCE holds it like every other role (it sees no tenant row). It owns the database, so it may
-- create the schema, the migrations' tables and the per-tenant schemas, and it is a member of the
-- two roles the service switches to (see migration 20261130000010_force_rls.sql), created here
-- with the definitions the migrations would give them, so the migrations need not create them.
-- It is NOINHERIT: it may `set role tenant_platform` (the service's pool does, on every
-- connection) but does not hold that role's rights while it is itself — a policy `to
-- tenant_platform` applies to every role that inherits it, so an inheriting owner would see
-- every tenant's rows.

do $$
declare
    owner text := current_setting('tenant_setup.owner');
    password text := nullif(current_setting('tenant_setup.password', true), '');
    role_name text;
begin
    if owner is null or owner = '' then
        raise exception 'set tenant_setup.owner to the role that should own the database';
    end if;
    if not exists (select from pg_roles where rolname = owner) then
        execute format('create role %I login noinherit nosuperuser nobypassrls nocreatedb nocreaterole', owner);
    elsif exists (select from pg_roles where rolname = owner and (rolsuper or rolbypassrls)) then
        raise exception 'role % exists and is a superuser or has BYPASSRLS: row-level security would not bind it', owner;
    else
        execute format('alter role %I noinherit', owner);
    end if;
    if password is not null then
        execute format('alter role %I password %L', owner, password);
    end if;
    foreach role_name in array array['tenant_app', 'tenant_platform'] loop
        begin
            if not exists (select from pg_roles where rolname = role_name) then
                -- as migrations 20261127000003 and 20261130000010 create them
                execute format('create role %I %s nosuperuser nobypassrls nocreatedb nocreaterole', role_name,
                               case role_name when 'tenant_app' then 'login' else 'nologin' end);
            end if;
        exception
            -- another database's setup or migration created it at the same moment
            when duplicate_object or unique_violation then null;
        end;
        if not pg_has_role(owner, role_name, 'member') then
            execute format('grant %I to %I', role_name, owner);
        end if;
    end loop;
    execute format('alter database %I owner to %I', current_database(), owner);
    -- PostgreSQL 15 gives `public` to the database owner (pg_database_owner); older versions
    -- leave it to the bootstrap superuser.
    execute format('alter schema public owner to %I', owner);
end
$$;
