-- language=PostgreSQL
-- Usage history from the rollups, and a schedule key so a periodic job is enqueued once per tick
-- however many workers run the scheduler.

create table usage_history (
    tenant_id      uuid not null references tenants (id) on delete cascade,
    resource_type  varchar(50) not null,
    -- the hour this snapshot belongs to
    bucket_start   timestamptz not null,
    -- the quota window the counted usage belongs to (null for gauges)
    window_start   timestamptz,
    -- usage in that window (gauges: the amount held) when the snapshot was taken
    used           bigint not null,
    recorded_at    timestamptz not null default now(),
    primary key (tenant_id, resource_type, bucket_start)
);

grant select on usage_history to tenant_app;
alter table usage_history enable row level security;
create policy tenant_isolation on usage_history
    using (tenant_id = app_current_tenant()) with check (tenant_id = app_current_tenant());

alter table jobs add column schedule_key text unique;
