-- language=PostgreSQL
-- What the lifecycle jobs need: delivery bookkeeping and saga phase on `jobs`, the billing
-- accounts, the record of sent emails (so a retried step never mails twice), and backups.

alter table jobs
    -- the apalis task id of the latest push to Redis; the reconciler checks Redis still holds it
    add column delivery_id       text,
    add column dispatched_at     timestamptz,
    -- not before this time (exponential backoff between attempts)
    add column next_attempt_at   timestamptz not null default now(),
    -- `forward` while the steps run, `compensating` once a step failed for good
    add column phase             varchar(16) not null default 'forward'
        check (phase in ('forward', 'compensating'));

create table billing_accounts (
    tenant_id         uuid primary key references tenants (id) on delete cascade,
    provider          varchar(16) not null check (provider in ('local', 'stripe')),
    customer_ref      text not null,
    subscription_ref  text,
    plan_id           uuid not null references subscription_plans (id),
    billing_interval  varchar(8) not null default 'month' check (billing_interval in ('month', 'year')),
    status            varchar(16) not null default 'active' check (status in ('active', 'canceled')),
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    canceled_at       timestamptz
);

-- One row per email a job step sends, keyed by the step's idempotency key.
create table sent_emails (
    idempotency_key  text primary key,
    tenant_id        uuid,
    kind             varchar(64) not null,
    recipient        text not null,
    message_id       text not null,
    status           varchar(16) not null check (status in ('sending', 'sent')),
    attempts         integer not null default 1,
    created_at       timestamptz not null default now(),
    sent_at          timestamptz
);
create index sent_emails_tenant_idx on sent_emails (tenant_id);

create table tenant_backups (
    id              uuid primary key,
    tenant_id       uuid not null,
    tenant_slug     varchar(50) not null,
    job_id          uuid unique,
    object_key      text not null,
    size_bytes      bigint not null,
    sha256          char(64) not null,
    key_id          varchar(32) not null,
    format_version  integer not null,
    created_at      timestamptz not null default now(),
    verified_at     timestamptz
);
create index tenant_backups_tenant_idx on tenant_backups (tenant_id, created_at desc);

alter table tenants add column last_backup_id uuid references tenant_backups (id);

grant select on billing_accounts, tenant_backups to tenant_app;

alter table billing_accounts enable row level security;
create policy tenant_isolation on billing_accounts
    using (tenant_id = app_current_tenant()) with check (tenant_id = app_current_tenant());
alter table sent_emails enable row level security;
create policy tenant_isolation on sent_emails
    using (tenant_id = app_current_tenant()) with check (tenant_id = app_current_tenant());
alter table tenant_backups enable row level security;
create policy tenant_isolation on tenant_backups
    using (tenant_id = app_current_tenant()) with check (tenant_id = app_current_tenant());
