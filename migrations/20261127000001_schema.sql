-- language=PostgreSQL
-- The control plane's own tables. Tenant-scoped tables carry `tenant_id` and are protected by
-- row-level security (see 20261127000003_rls.sql).

create type tenant_status_enum as enum
    ('provisioning', 'active', 'suspended', 'deleting', 'deleted', 'failed');
create type config_data_type_enum as enum ('string', 'number', 'boolean', 'object', 'array');
create type quota_reset_period_enum as enum ('none', 'hourly', 'daily', 'weekly', 'monthly');
create type job_status_enum as enum
    ('queued', 'running', 'retrying', 'succeeded', 'failed', 'compensated');

create table subscription_plans (
    id              uuid primary key default gen_random_uuid(),
    name            varchar(100) not null,
    slug            varchar(50) not null unique,
    description     text,
    price_monthly   numeric(10, 2) not null check (price_monthly >= 0),
    price_yearly    numeric(10, 2) not null check (price_yearly >= 0),
    currency        char(3) not null default 'usd',
    api_rate_limit  integer not null check (api_rate_limit > 0),
    features        jsonb not null,
    quotas          jsonb not null,
    overage_prices  jsonb not null default '{}',
    sort_order      integer not null default 0,
    is_active       boolean not null default true,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);

create table tenants (
    id             uuid primary key default gen_random_uuid(),
    name           varchar(100) not null,
    slug           varchar(50) not null check (slug ~ '^[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$'),
    domain         varchar(255),
    status         tenant_status_enum not null default 'provisioning',
    status_reason  text,
    plan_id        uuid not null references subscription_plans (id),
    owner_id       uuid not null,
    owner_email    varchar(320),
    settings       jsonb not null default '{}',
    features       jsonb not null default '{}',
    created_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now(),
    suspended_at   timestamptz,
    deleted_at     timestamptz,
    expires_at     timestamptz,
    search         tsvector generated always as (
        to_tsvector('simple', name || ' ' || slug || ' ' || replace(slug, '-', ' ') || ' '
            || coalesce(domain, '') || ' ' || coalesce(replace(domain, '.', ' '), ''))
    ) stored
);
-- A deleted tenant keeps its row (with its backup reference) but frees its slug and domain.
create unique index tenants_slug_live_key on tenants (slug) where status <> 'deleted';
create unique index tenants_domain_live_key on tenants (lower(domain))
    where domain is not null and status <> 'deleted';
create index tenants_search_idx on tenants using gin (search);
create index tenants_status_idx on tenants (status, created_at desc);
create index tenants_plan_idx on tenants (plan_id);

create table tenant_configs (
    id            uuid primary key default gen_random_uuid(),
    tenant_id     uuid not null references tenants (id) on delete cascade,
    category      varchar(50) not null,
    key           varchar(100) not null,
    value         jsonb not null,
    data_type     config_data_type_enum not null,
    is_encrypted  boolean not null default false,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    unique (tenant_id, category, key)
);

create table tenant_quotas (
    id             uuid primary key default gen_random_uuid(),
    tenant_id      uuid not null references tenants (id) on delete cascade,
    resource_type  varchar(50) not null,
    limit_value    bigint not null check (limit_value >= 0),
    used_value     bigint not null default 0,
    unit           varchar(20) not null,
    reset_period   quota_reset_period_enum not null default 'none',
    last_reset_at  timestamptz,
    created_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now(),
    unique (tenant_id, resource_type)
);

-- The source of truth for every asynchronous job; Redis only carries delivery.
create table jobs (
    id                uuid primary key,
    kind              varchar(64) not null,
    tenant_id         uuid references tenants (id) on delete set null,
    status            job_status_enum not null default 'queued',
    payload           jsonb not null,
    attempts          integer not null default 0,
    max_attempts      integer not null default 8,
    steps             jsonb not null default '[]',
    result            jsonb,
    error             jsonb,
    lease_owner       text,
    lease_expires_at  timestamptz,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    finished_at       timestamptz
);
create index jobs_tenant_idx on jobs (tenant_id, created_at desc);
create index jobs_open_idx on jobs (status, updated_at) where status in ('queued', 'running', 'retrying');

create table audit_log (
    id          bigint generated always as identity primary key,
    tenant_id   uuid,
    actor_type  varchar(16) not null check (actor_type in ('user', 'service', 'system')),
    actor_id    text not null,
    action      varchar(100) not null,
    resource    text,
    old_value   jsonb,
    new_value   jsonb,
    request_id  text,
    created_at  timestamptz not null default now()
);
create index audit_log_tenant_idx on audit_log (tenant_id, created_at desc);

-- Transactional outbox: written with the change, relayed to the `tenant-events` stream.
create table outbox_events (
    id            uuid primary key,
    tenant_id     uuid,
    event_type    varchar(100) not null,
    payload       jsonb not null,
    occurred_at   timestamptz not null default now(),
    published_at  timestamptz
);
create index outbox_unpublished_idx on outbox_events (occurred_at, id) where published_at is null;

create table idempotency_keys (
    scope          text not null,
    key            varchar(255) not null,
    method         varchar(10) not null,
    path           text not null,
    request_hash   bytea not null,
    status_code    integer,
    response_body  jsonb,
    created_at     timestamptz not null default now(),
    primary key (scope, key)
);
create index idempotency_keys_created_idx on idempotency_keys (created_at);
