// One tenant: status, plan and billing, quota bars, features, configuration (secrets masked by
// the API), jobs, audit log and invoices, with the actions the signed-in operator may take.

import { get, withQuery } from './api.js';
import { can } from './auth.js';
import { tenantActions } from './actions.js';
import { kindLabel } from './jobs.js';
import { plan } from './tenants.js';
import { badge, card, date, errorText, facts, fill, h, loading, money, quotaBar, table } from './ui.js';

const LIVE = new Set(['active', 'suspended']);

export async function renderTenant(main, session, id, refresh) {
  fill(main, loading());
  let tenant;
  try {
    tenant = (await get(`/api/v1/tenants/${encodeURIComponent(id)}`)).data;
  } catch (err) {
    fill(main, h('p', {}, h('a', { href: '#/tenants' }, '← Tenants')), errorText(err));
    return;
  }
  const base = `/api/v1/tenants/${tenant.id}`;
  const live = LIVE.has(tenant.status);
  const gone = ['deleting', 'deleted', 'failed'].includes(tenant.status);
  const section = (title, anchor, load) => {
    const body = h('div', {}, loading());
    load()
      .then((content) => fill(body, content))
      .catch((err) => fill(body, errorText(err)));
    return card(title, anchor, body);
  };

  fill(
    main,
    h('p', {}, h('a', { href: '#/tenants' }, '← Tenants')),
    h(
      'div.page-head',
      {},
      h('h1', { id: 'tenant-name' }, tenant.name, ' ', badge(tenant.status)),
      h('div.actions', { id: 'tenant-actions' }, tenantActions(tenant, session, refresh)),
    ),
    tenant.statusReason ? h('p.muted', { id: 'status-reason' }, `Reason: ${tenant.statusReason}`) : null,
    h(
      'div.grid',
      {},
      card(
        'Overview',
        'overview',
        facts([
          ['Slug', h('code', {}, tenant.slug)],
          ['Id', h('code', {}, tenant.id)],
          ['Plan', tenant.plan?.name ?? '—'],
          ['Domain', tenant.domain ?? '—'],
          ['Owner', tenant.ownerEmail ?? tenant.ownerId],
          ['Created', date(tenant.createdAt)],
          ['Updated', date(tenant.updatedAt)],
          tenant.suspendedAt ? ['Suspended', date(tenant.suspendedAt)] : [null, null],
          tenant.deletedAt ? ['Deleted', date(tenant.deletedAt)] : [null, null],
        ]),
      ),
      live
        ? section('Billing', 'billing', () => get(`${base}/billing`).then(({ data }) => billing(data)))
        : null,
    ),
    live
      ? section('Quotas', 'quotas', () =>
          get(`${base}/quotas`).then(({ data }) => h('div.quotas', {}, data.map(quotaBar))),
        )
      : null,
    h(
      'div.grid',
      {},
      gone
        ? null
        : section('Features', 'features', () => get(`${base}/features`).then(({ data }) => features(data))),
      gone
        ? null
        : section('Configuration', 'config', () => get(`${base}/config`).then(({ data }) => config(data))),
    ),
    section('Jobs', 'jobs', () =>
      get(withQuery(`${base}/jobs`, { limit: 10 })).then(({ data }) => jobs(data)),
    ),
    can(session, 'audit.read')
      ? section('Audit log', 'audit', () =>
          get(withQuery(`${base}/audit`, { limit: 15 })).then(({ data }) => audit(data)),
        )
      : null,
    section('Invoices', 'invoices', () =>
      get(withQuery(`${base}/invoices`, { limit: 10 })).then(({ data }) => invoices(data)),
    ),
  );
}

async function billing(b) {
  const p = await plan(b.plan.id).catch(() => null);
  const price = p ? (b.interval === 'year' ? p.priceYearly : p.priceMonthly) : null;
  return h(
    'div',
    {},
    facts([
      ['Plan', `${b.plan.name} v${b.plan.version}${b.plan.superseded ? ' (superseded)' : ''}`],
      ['Price', price ? `${money(price)} / ${b.interval}` : b.interval],
      ['Account', badge(b.status)],
      ['Provider', b.provider],
      ['Period', [date(b.currentPeriod.start), ' – ', date(b.currentPeriod.end)]],
      ['Balance due', money(b.balance)],
      ['Card', b.paymentMethod ? `${b.paymentMethod.brand} ···· ${b.paymentMethod.last4}` : 'none on file'],
    ]),
    h('h3', {}, 'Upcoming invoice ', h('span.muted', {}, money(b.upcomingInvoice.total))),
    table(
      ['Line', 'Amount'],
      b.upcomingInvoice.lines.map((l) => [l.description, h('span.num', {}, money(l.amount))]),
      'Nothing to bill yet.',
    ),
  );
}

const features = (flags) =>
  table(
    ['Feature', 'Enabled', 'Source', 'In plan'],
    flags.map((f) => [
      f.name,
      h(`span.flag.${f.enabled ? 'on' : 'off'}`, { dataset: { flag: f.name } }, f.enabled ? 'on' : 'off'),
      h(`span.source.${f.source}`, {}, f.source),
      f.inPlan ? 'yes' : 'no',
    ]),
  );

/** `[dotted key, value]` of every leaf. */
function leaves(value, prefix = '') {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    const entries = Object.entries(value);
    if (!entries.length) return prefix ? [[prefix, '{}']] : [];
    return entries.flatMap(([k, v]) => leaves(v, prefix ? `${prefix}.${k}` : k));
  }
  return [[prefix, value]];
}

function configValue(v) {
  if (typeof v === 'string' && v.startsWith('****'))
    return h('span.secret', { title: 'secret: stored encrypted, masked by the API' }, v);
  if (v === '' || v === null) return h('span.muted', {}, '—');
  if (Array.isArray(v)) return v.length ? v.join(', ') : h('span.muted', {}, 'none');
  return String(v);
}

function config(c) {
  const layer = (name, values, note) =>
    h(
      'details',
      { open: name === 'tenant' },
      h('summary', {}, name, ' ', h('span.muted', {}, note)),
      table(
        ['Key', 'Value'],
        leaves(values).map(([k, v]) => [h('code', {}, k), configValue(v)]),
      ),
    );
  return h(
    'div',
    {},
    layer('tenant', c.tenant, 'writable by the tenant'),
    layer('plan', c.plan, 'from the plan'),
    layer('system', c.system, 'read-only'),
  );
}

function jobs(list) {
  return table(
    ['Job', 'Status', 'Steps', 'Created', 'Finished', ''],
    list.map((j) => {
      const steps = Array.isArray(j.steps) ? j.steps : [];
      return [
        h('a', { href: `#/jobs/${j.id}`, dataset: { kind: j.kind } }, kindLabel(j.kind)),
        badge(j.status),
        `${steps.filter((s) => s.status === 'succeeded').length}/${steps.length}`,
        date(j.createdAt),
        date(j.finishedAt),
        j.result?.backupId
          ? ['backup ', h('code.backup-id', {}, j.result.backupId)]
          : (j.error?.message ?? ''),
      ];
    }),
    'No jobs.',
  );
}

function audit(entries) {
  const change = (e) => {
    const show = (v) => (v === null || v === undefined ? '' : JSON.stringify(v));
    const text = [show(e.oldValue), show(e.newValue)].filter(Boolean).join(' → ');
    return h('code.change', { title: text }, text.length > 120 ? `${text.slice(0, 117)}…` : text);
  };
  return table(
    ['When', 'Actor', 'Action', 'Change'],
    entries.map((e) => [
      date(e.createdAt),
      `${e.actorType}:${e.actorId}`,
      h('code', {}, e.action),
      change(e),
    ]),
    'No entries.',
  );
}

function invoices(list) {
  const m = (amount, currency) => money({ amount, currency });
  return table(
    ['Number', 'Period', 'Status', 'Total', 'Due', 'Lines'],
    list.map((i) => [
      i.number,
      [date(i.periodStart), ' – ', date(i.periodEnd)],
      badge(i.status),
      h('span.num', {}, m(i.total, i.currency)),
      h('span.num', {}, m(i.amountDue, i.currency)),
      h(
        'details',
        {},
        h('summary', {}, `${i.lines.length} line${i.lines.length === 1 ? '' : 's'}`),
        h(
          'ul.plain',
          {},
          i.lines.map((l) => h('li', {}, `${l.description}: ${m(l.amount, l.currency)}`)),
        ),
      ),
    ]),
    'No invoices yet.',
  );
}
