// Small DOM and formatting helpers. Text always goes in as text nodes (never innerHTML), so
// nothing the API returns can become markup.

/** `h('a.button', {href}, 'text', child…)`: an element with classes, attributes and children. */
export function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split('.');
  const el = document.createElement(tag || 'div');
  if (classes.length) el.className = classes.join(' ');
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value') el.value = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** A titled card; `id` names it for links and tests. */
export const card = (title, id, ...body) =>
  h('section.card', { id, 'aria-labelledby': `${id}-title` }, h('h2', { id: `${id}-title` }, title), ...body);

export const loading = () => h('p.muted', {}, 'Loading…');

export const errorText = (err) =>
  h('p.error', { role: 'alert' }, `${err.code ? err.code + ': ' : ''}${err.message}`);

/** A definition list from `[label, value]` pairs (null values are skipped). */
export const facts = (pairs) =>
  h(
    'dl.facts',
    {},
    pairs.filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]),
  );

/** A table; `rows` are arrays of cells (nodes or text). */
export function table(headings, rows, empty = 'None.') {
  if (!rows.length) return h('p.muted', {}, empty);
  return h(
    'table',
    {},
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        headings.map((t) => h('th', { scope: 'col' }, t)),
      ),
    ),
    h(
      'tbody',
      {},
      rows.map((r) =>
        h(
          'tr',
          {},
          r.map((c) => h('td', {}, c)),
        ),
      ),
    ),
  );
}

export const badge = (status) => h(`span.badge.s-${status}`, { dataset: { status } }, status);

export function date(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return h(
    'time',
    { datetime: iso, title: iso },
    d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }),
  );
}

export function duration(fromIso, toIso) {
  if (!fromIso || !toIso) return '';
  const ms = new Date(toIso) - new Date(fromIso);
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** `{amount, currency}` in minor units, formatted in the currency's own digits. */
export function money(m) {
  if (!m) return '—';
  const currency = m.currency.toUpperCase();
  const fmt = new Intl.NumberFormat(undefined, { style: 'currency', currency });
  const digits = fmt.resolvedOptions().maximumFractionDigits;
  return fmt.format(m.amount / 10 ** digits);
}

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
export function quantity(value, unit) {
  if (unit === 'bytes') {
    let v = value;
    let i = 0;
    while (Math.abs(v) >= 1024 && i < BYTE_UNITS.length - 1) {
      v /= 1024;
      i++;
    }
    return `${Number.isInteger(v) ? v : v.toFixed(1)} ${BYTE_UNITS[i]}`;
  }
  const n = Number(value).toLocaleString();
  return unit && unit !== 'count' ? `${n} ${unit}` : n;
}

/** The bar's level: under 75 %, from 75, from 90, from 95. */
export function level(percent) {
  if (percent >= 95) return 'critical';
  if (percent >= 90) return 'high';
  if (percent >= 75) return 'warn';
  return 'ok';
}

/** A quota bar: used of limit, coloured at 75/90/95 %. */
export function quotaBar({ resource, used, limit, unit, resetPeriod, resetAt }) {
  const percent = limit > 0 ? Math.min(100, (used / limit) * 100) : used > 0 ? 100 : 0;
  const fillEl = h('span.bar-fill');
  fillEl.style.width = `${percent}%`; // CSSOM, allowed by the CSP (no inline style attributes)
  return h(
    `div.quota.q-${level(percent)}`,
    { dataset: { resource, level: level(percent) } },
    h(
      'div.quota-head',
      {},
      h('strong', {}, resource),
      h('span', {}, `${quantity(used, unit)} / ${quantity(limit, unit)}`),
    ),
    h(
      'div.bar',
      {
        role: 'meter',
        'aria-valuemin': 0,
        'aria-valuemax': 100,
        'aria-valuenow': percent.toFixed(1),
        'aria-label': resource,
      },
      fillEl,
    ),
    h(
      'div.quota-foot.muted',
      {},
      `${percent.toFixed(1)} %`,
      resetPeriod && resetPeriod !== 'none' ? ` · resets ${resetPeriod}` : '',
      resetAt ? [' · next ', date(resetAt)] : '',
    ),
  );
}

/** A modal dialog; resolves when closed. `build(close)` returns its body. */
export function modal(title, build) {
  return new Promise((resolve) => {
    const dlg = h('dialog.modal', { 'aria-labelledby': 'modal-title' });
    const close = (value) => {
      dlg.close();
      dlg.remove();
      resolve(value);
    };
    dlg.addEventListener('cancel', (e) => {
      e.preventDefault();
      close(undefined);
    });
    fill(dlg, h('h2', { id: 'modal-title' }, title), build(close));
    document.body.append(dlg);
    dlg.showModal();
  });
}

let flashTimer;
/** A short message at the top of the page. */
export function flash(text, kind = 'info') {
  const el = document.getElementById('flash');
  el.className = `flash ${kind}`;
  fill(el, text);
  el.hidden = false;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => (el.hidden = true), 6000);
}

let scope = new AbortController();
/** A new page replaces the old: streams and timers of the old one stop. */
export function newPage() {
  scope.abort();
  scope = new AbortController();
  return scope.signal;
}
/** The current page's signal. */
export const pageSignal = () => scope.signal;
