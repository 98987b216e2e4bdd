-- language=PostgreSQL
-- Billing: money as integer minor units (never floats), plan versions, billing accounts with
-- their period, invoices and their lines, payments, plan changes, Stripe webhook events, and the
-- ledger of the local billing provider. Tables holding one tenant's billing data carry
-- `tenant_id` and row-level security, and are read and written through the tenant-scoped
-- transaction (`tenant_domain::db::begin_tenant`).

-- Zero-decimal currencies have no minor unit (see `tenant_domain::money::Currency`).
create function currency_exponent(c text) returns integer
    language sql immutable
    as $$ select case when lower(trim(c)) in ('jpy', 'krw', 'vnd', 'clp', 'isk', 'ugx') then 0 else 2 end $$;

-- Plans: every version of a plan is a row of its own. `family` is the id of the first version;
-- a change of price, quotas, features or overage prices inserts a new version and marks the old
-- one superseded, and tenants keep the version (row) they bought until they are moved.
alter table subscription_plans
    add column family               uuid,
    add column version              integer not null default 1 check (version >= 1),
    add column superseded_at        timestamptz,
    add column price_monthly_minor  bigint,
    add column price_yearly_minor   bigint;

update subscription_plans set
    family = id,
    price_monthly_minor = round(price_monthly * 10 ^ currency_exponent(currency))::bigint,
    price_yearly_minor = round(price_yearly * 10 ^ currency_exponent(currency))::bigint,
    -- `{per, price: "0.50"}` becomes `{per, unitAmount: 50}` (minor units per `per` units)
    overage_prices = coalesce((
        select jsonb_object_agg(o.key, jsonb_build_object(
            'per', (o.value ->> 'per')::bigint,
            'unitAmount', round((o.value ->> 'price')::numeric * 10 ^ currency_exponent(currency))::bigint))
        from jsonb_each(overage_prices) o), '{}');

alter table subscription_plans
    alter column family set not null,
    alter column price_monthly_minor set not null,
    alter column price_yearly_minor set not null,
    add constraint subscription_plans_price_monthly_check check (price_monthly_minor >= 0),
    add constraint subscription_plans_price_yearly_check check (price_yearly_minor >= 0),
    add constraint subscription_plans_family_version_key unique (family, version),
    drop column price_monthly,
    drop column price_yearly,
    drop constraint subscription_plans_slug_key;
-- A slug names the current version of its plan.
create unique index subscription_plans_slug_current_key on subscription_plans (slug) where superseded_at is null;

-- Billing accounts: the subscription's period, anchor and standing.
alter table billing_accounts
    drop constraint billing_accounts_status_check,
    add constraint billing_accounts_status_check check (status in ('active', 'past_due', 'canceled')),
    -- periods run from the anchor in whole intervals (BILLING_CYCLE_DAY; an interval change moves it)
    add column billing_anchor        timestamptz,
    add column current_period_start  timestamptz,
    add column current_period_end    timestamptz,
    -- usage before this moment has been invoiced (the last closed period's end)
    add column invoiced_through      timestamptz,
    -- first unpaid failure; the dunning job suspends the tenant BILLING_GRACE_DAYS later
    add column past_due_since        timestamptz,
    -- set when dunning suspended the tenant, so only such a suspension is lifted by a payment
    add column dunning_suspended_at  timestamptz,
    add column payment_method_brand  varchar(32),
    add column payment_method_last4  varchar(4),
    -- the subscription as the provider last reported it, and the time of that report (Stripe's
    -- event `created`): an older report never overwrites a newer one
    add column provider_status       varchar(32),
    add column provider_synced_at    timestamptz;
update billing_accounts a set
    billing_anchor = a.created_at,
    current_period_start = a.created_at,
    current_period_end = a.created_at + interval '1 month',
    invoiced_through = a.created_at;

create table invoices (
    id                 uuid primary key,
    tenant_id          uuid not null references tenants (id) on delete cascade,
    number             varchar(64) not null unique,
    status             varchar(16) not null check (status in ('open', 'paid', 'void')),
    currency           char(3) not null,
    -- the billing period this invoice closes
    period_start       timestamptz not null,
    period_end         timestamptz not null,
    total_minor        bigint not null,
    amount_paid_minor  bigint not null default 0 check (amount_paid_minor >= 0),
    provider_ref       text,
    issued_at          timestamptz not null default now(),
    paid_at            timestamptz,
    -- one invoice per tenant and period: the period-close job can run twice and issue nothing twice
    unique (tenant_id, period_start)
);
create index invoices_tenant_idx on invoices (tenant_id, issued_at desc);

-- Lines wait with `invoice_id` null until the next invoice takes them (proration from plan
-- changes); `source_key` makes every line's creation idempotent.
create table invoice_lines (
    id            uuid primary key,
    tenant_id     uuid not null references tenants (id) on delete cascade,
    invoice_id    uuid references invoices (id) on delete cascade,
    -- `credit`: a negative total carried to the next invoice (as Stripe's customer balance does)
    kind          varchar(16) not null check (kind in ('subscription', 'proration', 'overage', 'credit')),
    description   text not null,
    resource      varchar(50),
    quantity      bigint not null default 1,
    amount_minor  bigint not null,
    currency      char(3) not null,
    period_start  timestamptz not null,
    period_end    timestamptz not null,
    source_key    text not null unique,
    created_at    timestamptz not null default now()
);
create index invoice_lines_invoice_idx on invoice_lines (invoice_id);
create index invoice_lines_pending_idx on invoice_lines (tenant_id) where invoice_id is null;

create table payments (
    id                uuid primary key,
    tenant_id         uuid not null references tenants (id) on delete cascade,
    invoice_id        uuid not null references invoices (id) on delete cascade,
    amount_minor      bigint not null check (amount_minor > 0),
    currency          char(3) not null,
    status            varchar(16) not null check (status in ('pending', 'succeeded', 'failed')),
    provider          varchar(16) not null check (provider in ('local', 'stripe')),
    provider_ref      text,
    failure_message   text,
    -- the caller's Idempotency-Key: one payment per key and tenant
    idempotency_key   varchar(255),
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    unique (tenant_id, idempotency_key)
);
create index payments_invoice_idx on payments (invoice_id);

-- One row per plan change job: the proration computed once (step 1) and used by every later
-- step and by the preview's twin, the job result.
create table plan_changes (
    job_id            uuid primary key references jobs (id) on delete cascade,
    tenant_id         uuid not null references tenants (id) on delete cascade,
    from_plan_id      uuid not null references subscription_plans (id),
    to_plan_id        uuid not null references subscription_plans (id),
    from_interval     varchar(8) not null check (from_interval in ('month', 'year')),
    to_interval       varchar(8) not null check (to_interval in ('month', 'year')),
    proration_date    timestamptz not null,
    old_anchor        timestamptz not null,
    old_period_start  timestamptz not null,
    old_period_end    timestamptz not null,
    new_anchor        timestamptz not null,
    new_period_start  timestamptz not null,
    new_period_end    timestamptz not null,
    currency          char(3) not null,
    lines             jsonb not null,
    total_minor       bigint not null,
    -- when the new plan's quotas and features took effect, and when the change was announced
    applied_at        timestamptz,
    announced_at      timestamptz,
    created_at        timestamptz not null default now()
);
create index plan_changes_tenant_idx on plan_changes (tenant_id, created_at desc);

-- At most one plan change per tenant in flight.
create unique index jobs_one_open_plan_change on jobs (tenant_id)
    where kind = 'change_plan' and status in ('queued', 'running', 'retrying');

-- Stripe webhook events applied, by Stripe's event id: each is applied at most once.
create table stripe_events (
    id           text primary key,
    event_type   varchar(100) not null,
    created      timestamptz not null,
    received_at  timestamptz not null default now()
);

-- The local billing provider's own ledger (what Stripe keeps on its side): every request by its
-- idempotency key with the answer given, so a repeated key answers the same and creates nothing.
create table local_billing_requests (
    idempotency_key  text primary key,
    operation        varchar(32) not null,
    response         jsonb not null,
    created_at       timestamptz not null default now()
);

grant select, insert, update on billing_accounts to tenant_app;
grant select, insert, update on invoices, invoice_lines, payments, plan_changes to tenant_app;
-- a plan change that is undone withdraws its pending lines
grant delete on invoice_lines to tenant_app;

alter table invoices enable row level security;
create policy tenant_isolation on invoices
    using (tenant_id = app_current_tenant()) with check (tenant_id = app_current_tenant());
alter table invoice_lines enable row level security;
create policy tenant_isolation on invoice_lines
    using (tenant_id = app_current_tenant()) with check (tenant_id = app_current_tenant());
alter table payments enable row level security;
create policy tenant_isolation on payments
    using (tenant_id = app_current_tenant()) with check (tenant_id = app_current_tenant());
alter table plan_changes enable row level security;
create policy tenant_isolation on plan_changes
    using (tenant_id = app_current_tenant()) with check (tenant_id = app_current_tenant());
