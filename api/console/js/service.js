// The service page (platform admins): each dependency's health (`/health`), queue depth, jobs
// per kind with their failures, cache hit rate and this API process's figures
// (`/api/v1/metrics`). Refreshed every 10 seconds while open.

import { get } from './api.js';
import { can } from './auth.js';
import { card, errorText, facts, fill, h, loading, pageSignal, table } from './ui.js';
import { kindLabel } from './jobs.js';

const REFRESH_MS = 10_000;

export async function renderService(main, session) {
  if (!can(session, 'service.view')) {
    fill(main, h('p.error', {}, 'The service page needs the platform_admin role.'));
    return;
  }
  const body = h('div', { id: 'service' }, loading());
  const stamp = h('span.muted', {});
  fill(main, h('div.page-head', {}, h('h1', {}, 'Service'), stamp), body);
  const signal = pageSignal();
  const tick = async () => {
    const [health, metrics] = await Promise.all([
      healthReport(),
      get('/api/v1/metrics').then(
        (r) => r.data,
        (e) => e,
      ),
    ]);
    if (signal.aborted) return;
    fill(body, view(health, metrics));
    fill(stamp, `updated ${new Date().toLocaleTimeString()}`);
  };
  await tick();
  const timer = setInterval(tick, REFRESH_MS);
  signal.addEventListener('abort', () => clearInterval(timer));
}

/** `/health` answers 503 with the same report in the error's details when a dependency is down. */
async function healthReport() {
  try {
    return (await get('/health')).data;
  } catch (err) {
    return err.details?.dependencies ? err.details : err;
  }
}

const up = (ok, label = ok ? 'up' : 'down') => h(`span.dep.${ok ? 'up' : 'down'}`, {}, label);
const pct = (x) => (typeof x === 'number' ? `${(x * 100).toFixed(2)} %` : '—');
const count = (m) => Object.values(m ?? {}).reduce((a, b) => a + b, 0);

function view(health, metrics) {
  const deps = health instanceof Error ? errorText(health) : dependencies(health);
  return h(
    'div',
    {},
    h(
      'div.grid',
      {},
      card('Dependencies', 'dependencies', deps),
      metrics instanceof Error ? card('Metrics', 'metrics', errorText(metrics)) : overview(metrics),
    ),
    metrics instanceof Error ? null : jobsCard(metrics),
    metrics instanceof Error ? null : h('div.grid', {}, tenantsCard(metrics), processCard(metrics)),
  );
}

function dependencies(health) {
  const d = health.dependencies;
  const stripe =
    d.stripe === 'not_configured'
      ? h('span.dep.off', {}, 'not configured (local billing)')
      : up(d.stripe === 'up', d.stripe);
  return h(
    'div',
    {},
    h(
      'p',
      {},
      'Overall: ',
      h(`span.dep.${health.status === 'healthy' ? 'up' : 'down'}`, { id: 'health-status' }, health.status),
      ` · ${health.service} ${health.version}`,
    ),
    table(
      ['Dependency', 'State'],
      [
        ['PostgreSQL', up(d.database)],
        ['Redis', up(d.redis)],
        ['Job queue (Redis)', up(d.queue)],
        ['Stripe', stripe],
      ],
    ),
  );
}

function overview(m) {
  const tiles = [
    ['Active tenants', m.tenants.byStatus.active ?? 0],
    ['Queue depth', m.queueDepth ?? '—'],
    ['Open jobs', count(m.jobs.open)],
    [
      'Failed jobs (24 h)',
      (m.jobs.finishedLast24Hours.failed ?? 0) + (m.jobs.finishedLast24Hours.compensated ?? 0),
    ],
    ['Cache hit rate', pct(m.process.cacheHitRate)],
    ['Unpublished events', m.unpublishedEvents],
  ];
  return card(
    'At a glance',
    'glance',
    h(
      'div.tiles',
      {},
      tiles.map(([label, value]) =>
        h(
          'div.tile',
          { dataset: { tile: label } },
          h('span.tile-value', {}, String(value)),
          h('span.muted', {}, label),
        ),
      ),
    ),
    h(
      'p.muted.small',
      {},
      "Cache hit rate: this API process's share of context lookups answered from memory or Redis.",
    ),
  );
}

function jobsCard(m) {
  const kinds = Object.entries(m.jobsByKind ?? {});
  const rows = kinds.map(([kind, c]) => {
    const f = c.finishedLast24Hours;
    const failed = (f.failed ?? 0) + (f.compensated ?? 0);
    return [
      kindLabel(kind),
      String(count(c.open)),
      String(f.succeeded ?? 0),
      h(failed ? 'strong.error' : 'span', {}, String(failed)),
      Object.entries(c.open)
        .map(([s, n]) => `${s} ${n}`)
        .join(', ') || '—',
    ];
  });
  return card(
    'Jobs by kind',
    'jobs-by-kind',
    table(
      ['Kind', 'Open', 'Succeeded (24 h)', 'Failed or compensated (24 h)', 'Open by status'],
      rows,
      'No jobs in the last 24 hours.',
    ),
  );
}

function tenantsCard(m) {
  const t = m.tenants;
  return card(
    'Tenants',
    'tenant-counts',
    facts([
      ['Total', t.total],
      ...Object.entries(t.byStatus).map(([s, n]) => [s, n]),
      ['Created (30 days)', t.createdLast30Days],
      ['Deleted (30 days)', t.deletedLast30Days],
      [
        'Active by plan',
        Object.entries(t.activeByPlan)
          .map(([p, n]) => `${p} ${n}`)
          .join(', ') || '—',
      ],
    ]),
  );
}

function processCard(m) {
  const p = m.process;
  const mib = (b) => (typeof b === 'number' ? `${(b / 1048576).toFixed(1)} MiB` : '—');
  const uptime = `${Math.floor(p.uptimeSeconds / 3600)} h ${Math.floor((p.uptimeSeconds % 3600) / 60)} min`;
  return card(
    'This API process',
    'process',
    facts([
      ['Uptime', uptime],
      ['Resident memory', mib(p.residentMemoryBytes)],
      ['HTTP requests', p.httpRequests.toLocaleString()],
      ['5xx answers', p.httpServerErrors.toLocaleString()],
      ['Cache hit rate', pct(p.cacheHitRate)],
      ['Leased quota checks', p.quotaLeasedChecks.toLocaleString()],
      ['Quota state loads', p.quotaStateLoads.toLocaleString()],
      ['DB connections in use', p.databaseConnectionsInUse],
    ]),
  );
}
