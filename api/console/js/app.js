// The console's entry point: sign-in, the header, and a hash router
// (`#/tenants`, `#/tenants/new`, `#/tenants/{id}`, `#/jobs/{id}`, `#/service`).

import { get, whenUnauthorized } from './api.js';
import { can, decode, session, signIn, signOut, takeTokenFromUrl } from './auth.js';
import { renderJob } from './jobs.js';
import { renderService } from './service.js';
import { renderTenant } from './tenant.js';
import { renderCreate, renderList } from './tenants.js';
import { $, errorText, fill, flash, h, newPage } from './ui.js';

const main = $('#app');

function route() {
  const hash = location.hash.replace(/^#/, '') || '/tenants';
  const [path, query = ''] = hash.split('?');
  return { parts: path.split('/').filter(Boolean), params: new URLSearchParams(query) };
}

function header(s) {
  $('#nav').hidden = !s;
  $('#who').hidden = !s;
  if (!s) return;
  for (const link of document.querySelectorAll('#nav [data-needs]'))
    link.hidden = !can(s, `${link.dataset.nav}.view`);
  const who = s.platform
    ? 'platform admin'
    : `${s.tenantAdmin ? 'tenant admin' : 'member'} of ${s.tenantId ?? '?'}`;
  fill($('#who-name'), h('strong', {}, s.subject || 'signed in'), ` · ${who}`);
  const { parts } = route();
  for (const link of document.querySelectorAll('#nav a'))
    link.classList.toggle('current', link.dataset.nav === (parts[0] === 'service' ? 'service' : 'tenants'));
}

async function render() {
  newPage();
  const s = session();
  header(s);
  if (!s) return renderSignIn();
  const { parts, params } = route();
  const refresh = () => render();
  try {
    if (parts[0] === 'tenants' && parts[1] === 'new') return await renderCreate(main, s);
    if (parts[0] === 'tenants' && parts[1]) return await renderTenant(main, s, parts[1], refresh);
    if (parts[0] === 'jobs' && parts[1]) return await renderJob(main, s, parts[1]);
    if (parts[0] === 'service') return await renderService(main, s);
    return await renderList(main, s, params);
  } catch (err) {
    fill(main, errorText(err));
  }
}

function renderSignIn(message) {
  const input = h('textarea', {
    name: 'token',
    rows: 5,
    required: true,
    spellcheck: 'false',
    autocomplete: 'off',
    placeholder: 'eyJhbGciOi…',
  });
  const status = h('div', {}, message ? h('p.error', { role: 'alert' }, message) : null);
  const submit = async (e) => {
    e.preventDefault();
    const token = input.value.trim().replace(/^Bearer\s+/i, '');
    const claims = decode(token);
    if (!claims)
      return fill(status, h('p.error', { role: 'alert' }, 'That is not a JWT (three base64url parts).'));
    if (typeof claims.exp === 'number' && claims.exp * 1000 <= Date.now())
      return fill(status, h('p.error', { role: 'alert' }, 'That token has expired.'));
    signIn(token);
    try {
      await get('/api/v1/tenants?limit=1'); // the API, not the console, says whether the token is good
      if (location.hash === '#/tenants') render();
      else location.hash = '#/tenants'; // renders on hashchange
    } catch (err) {
      signOut();
      fill(status, errorText(err));
    }
  };
  fill(
    main,
    h(
      'section.card.narrow',
      { id: 'sign-in' },
      h('h1', {}, 'Sign in'),
      h(
        'p',
        {},
        'Paste a bearer token (a JWT with the platform_admin, tenant_admin or tenant_member role). ' +
          'It is kept in this tab only (sessionStorage) and sent to this service alone.',
      ),
      h(
        'form.stack',
        { onsubmit: submit },
        h('label', {}, 'Token', input),
        h('div.actions', {}, h('button.primary', { type: 'submit' }, 'Sign in')),
        status,
      ),
      h(
        'p.muted.small',
        {},
        'For development, scripts/dev prints a link that signs the dev platform admin in.',
      ),
    ),
  );
}

whenUnauthorized(() => {
  signOut();
  flash('The token was refused (expired or revoked); sign in again.', 'error');
  render();
});

$('#sign-out').addEventListener('click', () => {
  signOut();
  render();
});

takeTokenFromUrl();
window.addEventListener('hashchange', render);
render();
