// What an operator can do to a tenant: change plan (with the proration preview first), suspend,
// reactivate, delete (typing the slug), restore from a backup. Buttons appear only for what the
// token's roles and the tenant's status allow; the API checks again.

import { call, get, newKey, withQuery } from './api.js';
import { can } from './auth.js';
import { jobPanel } from './jobs.js';
import { plans } from './tenants.js';
import { date, errorText, fill, flash, h, loading, modal, money, table } from './ui.js';

const button = (label, action, onclick, kind = '') =>
  h(`button${kind ? '.' + kind : ''}`, { type: 'button', dataset: { action }, onclick }, label);

/** The action buttons for `tenant`; `refresh` re-renders the page after a change. */
export function tenantActions(tenant, session, refresh) {
  const s = tenant.status;
  const out = [];
  if (s === 'active' && can(session, 'plan.change'))
    out.push(button('Change plan', 'change-plan', () => changePlan(tenant, refresh)));
  if (s === 'active' && can(session, 'tenant.suspend'))
    out.push(button('Suspend', 'suspend', () => setStatus(tenant, 'suspended', refresh)));
  if (s === 'suspended' && can(session, 'tenant.reactivate'))
    out.push(button('Reactivate', 'reactivate', () => setStatus(tenant, 'active', refresh), 'primary'));
  if (['active', 'suspended', 'failed'].includes(s) && can(session, 'tenant.delete'))
    out.push(button('Delete…', 'delete', () => remove(tenant, refresh), 'danger'));
  if (s === 'deleted' && can(session, 'tenant.restore')) {
    const slot = h('span');
    latestBackup(tenant.id).then((backup) => {
      if (backup)
        fill(
          slot,
          button('Restore from backup', 'restore', () => restore(backup, tenant, refresh), 'primary'),
        );
    });
    out.push(slot);
  }
  return out;
}

/** The backup the tenant's last successful deletion left, if any. */
async function latestBackup(tenantId) {
  try {
    const { data } = await get(withQuery(`/api/v1/tenants/${tenantId}/jobs`, { limit: 50 }));
    return (
      data.find((j) => j.kind === 'delete_tenant' && j.status === 'succeeded' && j.result?.backupId)?.result
        .backupId ?? null
    );
  } catch {
    return null;
  }
}

/** Runs `job` inside an open dialog's body until it finishes; resolves to the finished job. */
async function followInDialog(body, job) {
  const panel = jobPanel(job);
  body.append(panel.el);
  return panel.done;
}

function changePlan(tenant, refresh) {
  const base = `/api/v1/tenants/${tenant.id}/billing/plans`;
  return modal(`Change plan of ${tenant.name}`, (close) => {
    const planSelect = h('select', { name: 'planId', required: true });
    const intervals = h(
      'fieldset.inline',
      {},
      h('legend', {}, 'Billed'),
      h(
        'label',
        {},
        h('input', { type: 'radio', name: 'interval', value: 'month', checked: true }),
        ' monthly',
      ),
      h('label', {}, h('input', { type: 'radio', name: 'interval', value: 'year' }), ' yearly'),
    );
    const preview = h('div', { id: 'plan-preview' });
    const status = h('div');
    let quote = null;
    const previewButton = h('button', { type: 'submit', dataset: { action: 'preview' } }, 'Preview');
    const confirm = h(
      'button.primary',
      { type: 'button', disabled: true, dataset: { action: 'confirm-plan' }, onclick: () => apply() },
      'Confirm change',
    );
    const form = h(
      'form.stack',
      { onsubmit: (e) => (e.preventDefault(), showPreview()), onchange: () => reset() },
      h('label', {}, 'New plan', planSelect),
      intervals,
      preview,
      h(
        'div.actions',
        {},
        h('button', { type: 'button', onclick: () => close() }, 'Cancel'),
        previewButton,
        confirm,
      ),
      status,
    );
    const choice = () => ({ planId: planSelect.value, interval: form.elements.interval.value });
    const reset = () => {
      quote = null;
      confirm.disabled = true;
      fill(preview);
    };
    plans()
      .then((list) => {
        for (const p of list)
          planSelect.append(
            h(
              'option',
              { value: p.slug },
              `${p.name} — ${money(p.priceMonthly)}/month, ${money(p.priceYearly)}/year`,
            ),
          );
        const next = list.find((p) => p.id !== tenant.planId);
        if (next) planSelect.value = next.slug;
      })
      .catch((err) => status.append(errorText(err)));

    async function showPreview() {
      reset();
      fill(preview, loading());
      try {
        quote = (await call('POST', withQuery(base, { preview: true }), { body: choice() })).data;
        fill(
          preview,
          h('h3', {}, 'Proration preview'),
          h(
            'p',
            {},
            `${quote.from.planName} (${quote.from.interval}) → ${quote.to.planName} (${quote.to.interval}), as of `,
            date(quote.prorationDate),
          ),
          table(
            ['Line', 'Amount'],
            quote.lines.map((l) => [l.description, h('span.num', {}, money(l.amount))]),
            'No proration.',
          ),
          h('p.total', {}, 'Total now: ', h('strong', { id: 'preview-total' }, money(quote.total))),
          h('p.muted', {}, 'New period: ', date(quote.newPeriod.start), ' – ', date(quote.newPeriod.end)),
        );
        confirm.disabled = false;
      } catch (err) {
        fill(preview, errorText(err));
      }
    }

    async function apply() {
      if (!quote) return;
      confirm.disabled = previewButton.disabled = true;
      try {
        // The previewed date: the job records exactly the lines shown.
        const body = { ...choice(), prorationDate: quote.prorationDate };
        const { data } = await call('POST', base, { body, key: newKey() });
        const job = await followInDialog(status, data.job);
        if (job?.status === 'succeeded') {
          flash(`${tenant.name} is now on ${quote.to.planName}.`, 'ok');
          close(true);
          refresh();
        } else {
          status.append(h('button', { type: 'button', onclick: () => (close(), refresh()) }, 'Close'));
        }
      } catch (err) {
        confirm.disabled = previewButton.disabled = false;
        status.append(errorText(err));
      }
    }
    return form;
  });
}

function setStatus(tenant, to, refresh) {
  const suspending = to === 'suspended';
  return modal(`${suspending ? 'Suspend' : 'Reactivate'} ${tenant.name}`, (close) => {
    const reason = h('input', {
      name: 'reason',
      maxlength: 500,
      placeholder: suspending ? 'e.g. abuse report #123' : 'optional',
    });
    const status = h('div');
    const key = newKey();
    const submit = async (e) => {
      e.preventDefault();
      try {
        const body = { status: to };
        if (reason.value.trim()) body.reason = reason.value.trim();
        await call('PATCH', `/api/v1/tenants/${tenant.id}/status`, { body, key });
        flash(`${tenant.name} is ${to}.`, 'ok');
        close(true);
        refresh();
      } catch (err) {
        fill(status, errorText(err));
      }
    };
    return h(
      'form.stack',
      { onsubmit: submit },
      h(
        'p',
        {},
        suspending
          ? 'Quota checks are denied while the tenant is suspended; its data stays.'
          : 'The tenant becomes active again and its quota checks are allowed.',
      ),
      h('label', {}, 'Reason', reason),
      h(
        'div.actions',
        {},
        h('button', { type: 'button', onclick: () => close() }, 'Cancel'),
        h(
          `button.${suspending ? 'danger' : 'primary'}`,
          { type: 'submit', dataset: { action: `confirm-${to}` } },
          suspending ? 'Suspend' : 'Reactivate',
        ),
      ),
      status,
    );
  });
}

function remove(tenant, refresh) {
  return modal(`Delete ${tenant.name}`, (close) => {
    const typed = h('input', {
      name: 'confirm',
      autocomplete: 'off',
      spellcheck: 'false',
      'aria-label': 'slug',
    });
    const go = h(
      'button.danger',
      { type: 'submit', disabled: true, dataset: { action: 'confirm-delete' } },
      'Delete tenant',
    );
    const status = h('div');
    typed.addEventListener('input', () => (go.disabled = typed.value !== tenant.slug));
    const submit = async (e) => {
      e.preventDefault();
      if (typed.value !== tenant.slug) return;
      go.disabled = typed.disabled = true;
      try {
        const { data } = await call('DELETE', `/api/v1/tenants/${tenant.id}`, { key: newKey() });
        const job = await followInDialog(status, data.job);
        const backupId = job?.result?.backupId;
        status.append(
          job?.status === 'succeeded'
            ? h(
                'p.ok',
                { id: 'backup-left' },
                'Deleted. Backup ',
                h('code.backup-id', {}, backupId),
                ' is kept (encrypted, verified); the tenant can be restored from it.',
              )
            : h('p.error', {}, 'The deletion did not complete; see the job.'),
          h(
            'div.actions',
            {},
            h(
              'button',
              { type: 'button', dataset: { action: 'close' }, onclick: () => (close(), refresh()) },
              'Close',
            ),
          ),
        );
      } catch (err) {
        go.disabled = typed.disabled = false;
        status.append(errorText(err));
      }
    };
    return h(
      'form.stack',
      { onsubmit: submit },
      h(
        'p',
        {},
        'The deletion first writes a backup of every row and the schema of ',
        h('strong', {}, tenant.slug),
        ' (compressed, AES-256-GCM encrypted) and reads it back to verify it; only then does it ' +
          'cancel billing, drop the schema and delete the rows. The tenant can be restored from that backup.',
      ),
      h('label', {}, ['Type ', h('code', {}, tenant.slug), ' to confirm'], typed),
      h('div.actions', {}, h('button', { type: 'button', onclick: () => close() }, 'Cancel'), go),
      status,
    );
  });
}

function restore(backupId, tenant, refresh) {
  return modal(`Restore ${tenant.name}`, (close) => {
    const status = h('div');
    const go = h('button.primary', { type: 'submit', dataset: { action: 'confirm-restore' } }, 'Restore');
    const submit = async (e) => {
      e.preventDefault();
      go.disabled = true;
      try {
        const { data } = await call('POST', '/api/v1/tenants/restore', { body: { backupId }, key: newKey() });
        const job = await followInDialog(status, data.job);
        if (job?.status === 'succeeded') flash(`${tenant.name} is restored.`, 'ok');
        status.append(
          h(
            'div.actions',
            {},
            h(
              'button',
              { type: 'button', dataset: { action: 'close' }, onclick: () => (close(), refresh()) },
              'Close',
            ),
          ),
        );
      } catch (err) {
        go.disabled = false;
        status.append(errorText(err));
      }
    };
    return h(
      'form.stack',
      { onsubmit: submit },
      h(
        'p',
        {},
        'Restores every row and the schema from backup ',
        h('code', {}, backupId),
        ' and reopens billing. The slug must still be free.',
      ),
      h('div.actions', {}, h('button', { type: 'button', onclick: () => close() }, 'Cancel'), go),
      status,
    );
  });
}
