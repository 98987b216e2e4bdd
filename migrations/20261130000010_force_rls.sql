-- language=PostgreSQL
-- Row-level security that holds every role, the owner included.
--
-- Three roles touch tenant rows:
--   * the owner (the DATABASE_URL user) owns the schema and runs migrations and the tenant
--     schemas' DDL. With FORCE ROW LEVEL SECURITY it sees no tenant row at all: no policy names it.
--   * `tenant_platform`, which the service's pool switches to on connect (domain/src/db.rs), for
--     platform-wide work: listing tenants, the job queue, the outbox relay, rollups, retention.
--     Its policy lets it see every tenant; it cannot change the schema.
--   * `tenant_app`, which every tenant-scoped transaction switches to (`TenantTx`), with
--     `app.tenant_id` set: it sees and writes only that tenant's rows.
-- Neither role has BYPASSRLS; a test reads the catalog and fails if a table with a `tenant_id`
-- column lacks RLS, FORCE, or either policy.

do $$
begin
    if not exists (select from pg_roles where rolname = 'tenant_platform') then
        create role tenant_platform nologin nosuperuser nobypassrls nocreatedb nocreaterole;
    end if;
exception
    when duplicate_object or unique_violation then null;
end
$$;

do $$
begin
    if not pg_has_role(current_user, 'tenant_platform', 'member') then
        execute format('grant tenant_platform to %I', current_user);
    end if;
end
$$;

grant usage on schema public to tenant_platform;
grant select, insert, update, delete on all tables in schema public to tenant_platform;
grant usage, select on all sequences in schema public to tenant_platform;
grant execute on all functions in schema public to tenant_platform;
-- tables and sequences of later migrations too
alter default privileges in schema public grant select, insert, update, delete on tables to tenant_platform;
alter default privileges in schema public grant usage, select on sequences to tenant_platform;

-- What tenant-scoped transactions need beyond the earlier grants: the usage history they read
-- and the rollups write, the billing account a restore writes back and a deletion removes, the
-- tenant's emails.
grant select, insert, update on usage_history to tenant_app;
grant select on sent_emails to tenant_app;
grant delete on billing_accounts to tenant_app;

do $$
declare
    t text;
begin
    for t in
        select c.relname from pg_class c
        join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'public' and c.relkind = 'r'
          and (c.relname = 'tenants'
               or exists (select from pg_attribute a
                          where a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped))
    loop
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        if not exists (select from pg_policies where schemaname = 'public' and tablename = t
                       and policyname = 'tenant_isolation') then
            execute format('create policy tenant_isolation on %I using (tenant_id = app_current_tenant()) '
                           'with check (tenant_id = app_current_tenant())', t);
        end if;
        execute format('create policy platform_access on %I to tenant_platform using (true) with check (true)', t);
    end loop;
end
$$;
