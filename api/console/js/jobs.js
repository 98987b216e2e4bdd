// A job's progress, step by step, updated live from its server-sent events; and the job page.

import { followJob, get, isFinal } from './api.js';
import { badge, date, duration, errorText, fill, h, loading, pageSignal } from './ui.js';

export const KIND_LABELS = {
  provision_tenant: 'Provisioning',
  delete_tenant: 'Deletion',
  restore_tenant: 'Restore',
  change_plan: 'Plan change',
  billing_cycle: 'Billing cycle',
  quota_rollup: 'Quota rollup',
  deliver_event: 'Event delivery',
  retention: 'Retention',
};

export const kindLabel = (kind) => KIND_LABELS[kind] ?? kind;

const STEP_MARKS = {
  pending: '○',
  running: '◐',
  succeeded: '✓',
  failed: '✗',
  compensated: '↺',
  skipped: '–',
};

function render(el, job) {
  el.dataset.status = job.status;
  el.dataset.events = String(Number(el.dataset.events || 0) + 1);
  const steps = Array.isArray(job.steps) ? job.steps : [];
  const done = steps.filter((s) => s.status === 'succeeded').length;
  const progress = h('progress', { max: steps.length || 1, value: done, 'aria-label': 'steps done' });
  fill(
    el,
    h(
      'div.job-head',
      {},
      h('strong', {}, kindLabel(job.kind)),
      badge(job.status),
      h('span.muted', {}, `attempt ${job.attempts} of ${job.maxAttempts}`),
      h('span.muted', {}, `${done}/${steps.length} steps`),
    ),
    progress,
    h(
      'ol.steps',
      {},
      steps.map((s) =>
        h(
          `li.step.s-${s.status}`,
          { dataset: { step: s.name, status: s.status } },
          h('span.mark', { 'aria-hidden': 'true' }, STEP_MARKS[s.status] ?? '·'),
          h('span.step-name', {}, s.name.replaceAll('_', ' ')),
          h('span.muted', {}, s.status),
          h('span.muted', {}, duration(s.startedAt, s.finishedAt)),
          s.error
            ? h('span.error', {}, typeof s.error === 'string' ? s.error : JSON.stringify(s.error))
            : null,
        ),
      ),
    ),
    job.error
      ? h(
          'p.error',
          { role: 'alert' },
          `${job.error.code ? job.error.code + ': ' : ''}${job.error.message ?? ''}`,
        )
      : null,
    h(
      'p.muted.small',
      {},
      'Job ',
      h('code', {}, job.id),
      ' · created ',
      date(job.createdAt),
      job.finishedAt ? [' · finished ', date(job.finishedAt)] : '',
    ),
  );
}

/**
 * A panel following `job` (as returned by the API) until it finishes; `done` resolves to the
 * finished job (or the last state seen, if the page was left first).
 */
export function jobPanel(job) {
  const el = h('div.job', { dataset: { jobId: job.id } });
  render(el, job);
  const done = isFinal(job)
    ? Promise.resolve(job)
    : followJob(job.id, (j) => render(el, j), { signal: pageSignal() }).catch((err) => {
        el.append(errorText(err));
        return null;
      });
  return { el, done };
}

/** `#/jobs/{id}`: one job, live. */
export async function renderJob(main, session, id) {
  fill(main, loading());
  let job;
  try {
    job = (await get(`/api/v1/jobs/${encodeURIComponent(id)}`)).data;
  } catch (err) {
    fill(main, errorText(err));
    return;
  }
  const back = job.tenantId
    ? h('a', { href: `#/tenants/${job.tenantId}` }, '← Tenant')
    : h('a', { href: '#/tenants' }, '← Tenants');
  const after = h('div', { id: 'job-after' });
  const panel = jobPanel(job);
  fill(
    main,
    h('p', {}, back),
    h('h1', {}, kindLabel(job.kind)),
    h('section.card', { id: 'job-progress' }, panel.el),
    after,
  );
  const done = await panel.done;
  if (done?.status !== 'succeeded' || !done.tenantId) return;
  if (['provision_tenant', 'restore_tenant'].includes(done.kind)) {
    fill(
      after,
      h(
        'p.ok',
        {},
        'The tenant is active. ',
        h(
          'a.button.primary',
          { href: `#/tenants/${done.tenantId}`, dataset: { action: 'open-tenant' } },
          'Open tenant',
        ),
      ),
    );
  } else if (done.kind === 'delete_tenant' && done.result?.backupId) {
    fill(
      after,
      h(
        'p.ok',
        {},
        'Backup ',
        h('code.backup-id', {}, done.result.backupId),
        ' is kept; restore it from the ',
        h('a', { href: `#/tenants/${done.tenantId}` }, 'tenant page'),
        '.',
      ),
    );
  }
}
