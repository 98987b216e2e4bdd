-- language=PostgreSQL
-- Row-level security. The service connects as the schema owner for platform-wide work (listing
-- tenants, plans, the job queue) and switches to the role `tenant_app` with
-- `set local role tenant_app` plus `set local app.tenant_id = '<uuid>'` for tenant-scoped work.
-- `tenant_app` has no BYPASSRLS, so with no tenant set it sees no tenant rows at all, and with
-- tenant A set it can neither read nor write B's rows. The role is cluster-wide and shared by
-- every database of the cluster that runs this migration.

do $$
begin
    if not exists (select from pg_roles where rolname = 'tenant_app') then
        create role tenant_app login nosuperuser nobypassrls nocreatedb nocreaterole;
    end if;
exception
    -- another database's migration created it at the same moment
    when duplicate_object or unique_violation then null;
end
$$;

-- The connecting user must be able to `set role tenant_app`.
do $$
begin
    if not pg_has_role(current_user, 'tenant_app', 'member') then
        execute format('grant tenant_app to %I', current_user);
    end if;
end
$$;

-- The tenant the current transaction works for, or null.
create function app_current_tenant() returns uuid
    language sql stable
    as $$ select nullif(current_setting('app.tenant_id', true), '')::uuid $$;

grant usage on schema public to tenant_app;
grant select on subscription_plans to tenant_app;
grant select, update on tenants to tenant_app;
grant select, insert, update, delete on tenant_configs, tenant_quotas to tenant_app;
grant select on jobs to tenant_app;
grant select, insert on audit_log, outbox_events to tenant_app;
grant execute on function app_current_tenant() to tenant_app;

alter table tenants enable row level security;
create policy tenant_isolation on tenants
    using (id = app_current_tenant()) with check (id = app_current_tenant());

alter table tenant_configs enable row level security;
create policy tenant_isolation on tenant_configs
    using (tenant_id = app_current_tenant()) with check (tenant_id = app_current_tenant());

alter table tenant_quotas enable row level security;
create policy tenant_isolation on tenant_quotas
    using (tenant_id = app_current_tenant()) with check (tenant_id = app_current_tenant());

alter table jobs enable row level security;
create policy tenant_isolation on jobs
    using (tenant_id = app_current_tenant()) with check (tenant_id = app_current_tenant());

alter table audit_log enable row level security;
create policy tenant_isolation on audit_log
    using (tenant_id = app_current_tenant()) with check (tenant_id = app_current_tenant());

alter table outbox_events enable row level security;
create policy tenant_isolation on outbox_events
    using (tenant_id = app_current_tenant()) with check (tenant_id = app_current_tenant());
