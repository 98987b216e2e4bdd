// The tenant list (search, status and plan filters, paging) and the form that creates a tenant.

import { call, get, newKey, withQuery } from './api.js';
import { can } from './auth.js';
import { badge, date, errorText, fill, h, loading, table } from './ui.js';

export const STATUSES = ['provisioning', 'active', 'suspended', 'deleting', 'deleted', 'failed'];
const PAGE_SIZE = 20;

let planList = null;
const planVersions = new Map();

/** The current version of every active plan (read once per page load). */
export function plans() {
  planList ??= get('/api/v1/plans').then(({ data }) => {
    for (const p of data) planVersions.set(p.id, p);
    return data;
  });
  return planList;
}

/** Any plan version by id, superseded ones included. */
export async function plan(id) {
  await plans().catch(() => null);
  if (!planVersions.has(id)) planVersions.set(id, (await get(`/api/v1/plans/${id}`)).data);
  return planVersions.get(id);
}

const planLabel = (p) => (p ? `${p.name}${p.supersededAt ? ` v${p.version}` : ''}` : '—');

export async function renderList(main, session, params) {
  const q = params.get('q') ?? '';
  const status = params.get('status') ?? '';
  const planFilter = params.get('planId') ?? '';
  const page = Math.max(1, Number(params.get('page')) || 1);
  const results = h('div', { id: 'tenant-results' }, loading());
  const form = h(
    'form.filters',
    { role: 'search', onsubmit: (e) => search(e, form) },
    h(
      'label',
      {},
      'Search',
      h('input', {
        type: 'search',
        name: 'q',
        value: q,
        placeholder: 'name, slug or domain',
        maxlength: 200,
      }),
    ),
    h(
      'label',
      {},
      'Status',
      h(
        'select',
        { name: 'status' },
        h('option', { value: '' }, 'any'),
        STATUSES.map((s) => h('option', { value: s, selected: s === status }, s)),
      ),
    ),
    h('label', {}, 'Plan', h('select', { name: 'planId' }, h('option', { value: '' }, 'any'))),
    h('button', { type: 'submit' }, 'Search'),
  );
  fill(
    main,
    h(
      'div.page-head',
      {},
      h('h1', {}, 'Tenants'),
      can(session, 'tenant.create') ? h('a.button.primary', { href: '#/tenants/new' }, 'New tenant') : null,
    ),
    form,
    results,
  );

  plans()
    .then((list) => {
      const select = form.elements.planId;
      for (const p of list)
        select.append(h('option', { value: p.slug, selected: p.slug === planFilter }, p.name));
    })
    .catch(() => {});

  try {
    const { data, meta } = await get(
      withQuery('/api/v1/tenants', { q, status, planId: planFilter, page, limit: PAGE_SIZE }),
    );
    const names = await Promise.all(data.map((t) => plan(t.planId).then(planLabel, () => '—')));
    const rows = data.map((t, i) => [
      h('a', { href: `#/tenants/${t.id}`, dataset: { slug: t.slug } }, t.name),
      h('code', {}, t.slug),
      badge(t.status),
      names[i],
      t.domain ?? '—',
      date(t.createdAt),
    ]);
    const pages = Math.max(1, Math.ceil(meta.total / meta.limit));
    const go = (p) => () =>
      (location.hash = withQuery('#/tenants', { q, status, planId: planFilter, page: p }));
    fill(
      results,
      table(['Name', 'Slug', 'Status', 'Plan', 'Domain', 'Created'], rows, 'No tenant matches.'),
      h(
        'div.pager',
        {},
        h('button', { type: 'button', disabled: page <= 1, onclick: go(page - 1) }, '← Previous'),
        h(
          'span.muted',
          { id: 'tenant-count' },
          `Page ${page} of ${pages} · ${meta.total} tenant${meta.total === 1 ? '' : 's'}`,
        ),
        h('button', { type: 'button', disabled: page >= pages, onclick: go(page + 1) }, 'Next →'),
      ),
    );
  } catch (err) {
    fill(results, errorText(err));
  }
}

function search(event, form) {
  event.preventDefault();
  const f = form.elements;
  location.hash = withQuery('#/tenants', {
    q: f.q.value.trim(),
    status: f.status.value,
    planId: f.planId.value,
  });
}

const slugify = (name) =>
  name
    .toLowerCase()
    .normalize('NFKD')
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 50);

export async function renderCreate(main, session) {
  if (!can(session, 'tenant.create')) {
    fill(main, h('p.error', {}, 'Creating tenants needs the platform_admin role.'));
    return;
  }
  let key = newKey(); // one per attempt: a double submit creates one tenant
  const status = h('div', { id: 'create-status' });
  let slugEdited = false;
  const form = h(
    'form.stack',
    { id: 'create-tenant', onsubmit: (e) => submit(e) },
    h('label', {}, 'Name', h('input', { name: 'name', required: true, maxlength: 100, autocomplete: 'off' })),
    h(
      'label',
      {},
      'Slug',
      h('input', {
        name: 'slug',
        required: true,
        pattern: '[a-z0-9][a-z0-9\\-]{1,48}[a-z0-9]',
        maxlength: 50,
        autocomplete: 'off',
      }),
      h('small.muted', {}, 'Lower-case letters, digits and dashes; it cannot change later.'),
    ),
    h('label', {}, 'Plan', h('select', { name: 'planId', required: true })),
    h(
      'label',
      {},
      'Owner user id',
      h('input', {
        name: 'ownerId',
        required: true,
        pattern: '[0-9a-fA-F\\-]{36}',
        placeholder: 'UUID of the owner in the user service',
      }),
    ),
    h(
      'label',
      {},
      'Owner email',
      h('input', { name: 'ownerEmail', type: 'email', placeholder: 'gets the welcome email' }),
    ),
    h('label', {}, 'Domain', h('input', { name: 'domain', placeholder: 'optional, e.g. acme.example.com' })),
    h(
      'div.actions',
      {},
      h('a.button', { href: '#/tenants' }, 'Cancel'),
      h('button.primary', { type: 'submit' }, 'Create tenant'),
    ),
    status,
  );
  const f = form.elements;
  f.name.addEventListener('input', () => {
    if (!slugEdited) f.slug.value = slugify(f.name.value);
  });
  f.slug.addEventListener('input', () => (slugEdited = true));
  fill(main, h('h1', {}, 'New tenant'), form);
  try {
    for (const p of await plans())
      f.planId.append(h('option', { value: p.slug, selected: p.slug === 'basic' }, `${p.name}`));
  } catch (err) {
    status.append(errorText(err));
  }

  async function submit(event) {
    event.preventDefault();
    const body = {
      name: f.name.value.trim(),
      slug: f.slug.value.trim(),
      planId: f.planId.value,
      ownerId: f.ownerId.value.trim(),
    };
    if (f.ownerEmail.value.trim()) body.ownerEmail = f.ownerEmail.value.trim();
    if (f.domain.value.trim()) body.domain = f.domain.value.trim();
    form.querySelector('button[type=submit]').disabled = true;
    try {
      const { data } = await call('POST', '/api/v1/tenants', { body, key });
      location.hash = `#/jobs/${data.job.id}`;
    } catch (err) {
      key = newKey(); // the body may change before the next attempt
      form.querySelector('button[type=submit]').disabled = false;
      const field = err.details?.field ? ` (${err.details.field})` : '';
      fill(status, h('p.error', { role: 'alert' }, `${err.code}: ${err.message}${field}`));
    }
  }
}
