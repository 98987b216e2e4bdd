// Browser test of the operator console (/console/), in Debian's chromium driven by playwright-core.
// Run by tests/integration/console.rs against a real API and worker; it can also be run by hand
// against `scripts/dev` (see the variables below). Exits 0 when every check passed.
//
//   CONSOLE_BASE_URL            the API, e.g. http://127.0.0.1:3004
//   CONSOLE_ADMIN_TOKEN         a platform admin's token
//   CONSOLE_TENANT_ADMIN_TOKEN  a tenant admin's token, and CONSOLE_TENANT_SLUG its tenant's slug
//   CHROMIUM                    the browser (default /usr/bin/chromium)
//   PLAYWRIGHT_CORE             the playwright-core package directory
//   CONSOLE_SCREENSHOT_DIR      where the screenshots go (none when unset)
//   CONSOLE_WAIT_FOR_WORKER=1   no worker runs yet: the new tenant's job must be seen queued, then
//                               the script prints "console-test: start the worker" and the
//                               caller starts one, so the page shows the job progressing live
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const base = env('CONSOLE_BASE_URL').replace(/\/$/, '');
const origin = new URL(base).origin;
const adminToken = env('CONSOLE_ADMIN_TOKEN');
const tenantToken = env('CONSOLE_TENANT_ADMIN_TOKEN');
const tenantSlug = env('CONSOLE_TENANT_SLUG');
const shots = process.env.CONSOLE_SCREENSHOT_DIR;
const waitForWorker = process.env.CONSOLE_WAIT_FOR_WORKER === '1';
const slug = process.env.CONSOLE_NEW_SLUG ?? `console-${Date.now().toString(36)}`;
const { chromium } = await import(pathToFileURL(join(env('PLAYWRIGHT_CORE'), 'index.mjs')).href);

const log = (...args) => console.log('console-test:', ...args);
const requests = [];
const problems = [];
let step = 'start';

function check(ok, message) {
  if (!ok) throw new Error(`${step}: ${message}`);
}

async function shot(page, name, target) {
  if (!shots) return;
  mkdirSync(shots, { recursive: true });
  await (target ?? page).screenshot({
    path: join(shots, `${name}.png`),
    ...(target ? {} : { fullPage: true }),
  });
  log(`screenshot ${name}.png`);
}

/** Records the context's requests (into its own list and the global one) and its errors. */
function watch(context) {
  const own = [];
  context.on('request', (r) => {
    requests.push(r.url());
    own.push(r.url());
  });
  context.on('page', (page) => {
    page.on('console', (m) => m.type() === 'error' && problems.push(`console error: ${m.text()}`));
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  });
  return own;
}

async function expectStatus(page, status, timeout = 15_000) {
  await page.locator(`#tenant-name .badge[data-status="${status}"]`).waitFor({ timeout });
}

const browser = await chromium.launch({
  executablePath: env('CHROMIUM', '/usr/bin/chromium'),
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
let failed = false;
let page;
try {
  const admin = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  watch(admin);
  page = await admin.newPage();

  step = 'sign in with the #token= link';
  await page.goto(`${base}/console/#token=${encodeURIComponent(adminToken)}`);
  await page.locator('#tenant-results table').waitFor();
  check(!page.url().includes('token='), `the token stayed in the URL: ${page.url()}`);
  check((await page.evaluate(() => sessionStorage.length)) === 1, 'the token is not in sessionStorage');
  check(
    await page
      .locator('#who-name')
      .innerText()
      .then((t) => t.includes('platform admin')),
    'not shown as platform admin',
  );
  await shot(page, 'tenant-list');

  step = 'paging';
  const pages = Number((await page.locator('#tenant-count').innerText()).match(/of (\d+)/)[1]);
  if (pages > 1) {
    await page.getByRole('button', { name: 'Next →' }).click();
    await page.locator('#tenant-count', { hasText: 'Page 2 of' }).waitFor();
    check((await page.locator('#tenant-results tbody tr').count()) >= 1, 'page 2 is empty');
    await page.getByRole('button', { name: '← Previous' }).click();
    await page.locator('#tenant-count', { hasText: 'Page 1 of' }).waitFor();
  }

  step = 'a tenant page with usage, secrets and overrides';
  await page.goto(`${base}/console/#/tenants?q=${tenantSlug}`);
  await page.click(`#tenant-results a[data-slug="${tenantSlug}"]`);
  await expectStatus(page, 'active');
  await page.locator('#quotas .quota').first().waitFor();
  const levels = await page.locator('#quotas .quota').evaluateAll((els) => els.map((e) => e.dataset.level));
  log(`quota bar levels: ${levels.join(' ')}`);
  for (const level of ['ok', 'warn', 'high', 'critical'])
    check(levels.includes(level), `no ${level} quota bar`);
  await page.locator('#config .secret').first().waitFor();
  const secret = await page.locator('#config .secret').first().innerText();
  check(secret.startsWith('****') && !secret.includes('console-demo'), `secret shown as ${secret}`);
  await page.locator('#features .source.override').first().waitFor();
  await page.locator('#billing dl.facts').waitFor();
  await page.locator('#audit table').waitFor();
  await page.locator('#invoices p, #invoices table').first().waitFor();
  await shot(page, 'tenant-page');

  step = 'create a tenant';
  await page.click('#nav a[data-nav=tenants]');
  await page.getByRole('link', { name: 'New tenant' }).click();
  await page.locator('#create-tenant select[name=planId] option[value=basic]').waitFor({ state: 'attached' });
  await page.fill('#create-tenant input[name=name]', 'Console Test Co');
  check(
    (await page.inputValue('#create-tenant input[name=slug]')) === 'console-test-co',
    'slug not derived from the name',
  );
  await page.fill('#create-tenant input[name=slug]', slug);
  await page.selectOption('#create-tenant select[name=planId]', 'basic');
  await page.fill('#create-tenant input[name=ownerId]', '5f1d7c3e-8a52-4d3b-9b61-2f0c6a4e9d11');
  await page.fill('#create-tenant input[name=ownerEmail]', `owner@${slug}.example.com`);
  await page.click('#create-tenant button[type=submit]');
  await page.waitForURL(/#\/jobs\//);
  const job = page.locator('#job-progress .job');
  await job.waitFor();

  step = 'watch the provisioning job live';
  if (waitForWorker) {
    check(
      (await job.getAttribute('data-status')) === 'queued',
      'the job is not shown queued before a worker runs',
    );
    log('start the worker');
  }
  await page.locator('#job-progress .job[data-status="succeeded"]').waitFor({ timeout: 60_000 });
  const events = Number(await job.getAttribute('data-events'));
  if (waitForWorker) check(events >= 3, `only ${events} job states rendered: the progress was not streamed`);
  check(
    (await job.locator('li.step[data-status="succeeded"]').count()) === 6,
    'not every provisioning step succeeded',
  );
  await shot(page, 'job-progress');
  log(`provisioning followed live: ${events} states rendered`);
  await page.click('[data-action=open-tenant]');

  step = 'tenant page';
  await expectStatus(page, 'active');
  await page.locator('#quotas .quota').first().waitFor();
  check((await page.locator('#quotas .quota').count()) === 8, 'not eight quota bars');
  await page.locator('#billing dl.facts').waitFor();
  await page.locator('#features table').waitFor();
  await page.locator('#config table').first().waitFor();
  await page.locator('#audit table').waitFor();
  await page.locator('#jobs table').waitFor();
  await page.locator('#invoices p, #invoices table').first().waitFor();

  step = 'find it by search';
  await page.goto(`${base}/console/#/tenants`);
  await page.locator('#tenant-results table').waitFor();
  await page.fill('input[name=q]', 'Console Test');
  await page.press('input[name=q]', 'Enter');
  await page.waitForURL(/q=Console/);
  await page.locator('#tenant-count', { hasText: /· 1 tenant$/ }).waitFor();
  await page.locator(`#tenant-results a[data-slug="${slug}"]`).waitFor();
  const rows = await page.locator('#tenant-results tbody tr').count();
  check(rows === 1, `search found ${rows} rows`);
  await page.selectOption('select[name=status]', 'suspended');
  await page.click('form.filters button[type=submit]');
  await page.waitForURL(/status=suspended/);
  await page.getByText('No tenant matches.').waitFor();
  await page.selectOption('select[name=status]', 'active');
  await page.locator('select[name=planId] option[value=basic]').waitFor({ state: 'attached' });
  await page.selectOption('select[name=planId]', 'basic');
  await page.click('form.filters button[type=submit]');
  await page.waitForURL(/planId=basic/);
  await page.locator(`#tenant-results a[data-slug="${slug}"]`).waitFor();
  await page.click(`#tenant-results a[data-slug="${slug}"]`);
  await expectStatus(page, 'active');

  step = 'change plan after the preview';
  await page.click('[data-action=change-plan]');
  await page.locator('dialog select[name=planId] option[value=pro]').waitFor({ state: 'attached' });
  await page.selectOption('dialog select[name=planId]', 'pro');
  check(await page.locator('[data-action=confirm-plan]').isDisabled(), 'confirm enabled before a preview');
  await page.click('[data-action=preview]');
  await page.locator('#preview-total').waitFor();
  check(/\d/.test(await page.locator('#preview-total').innerText()), 'no total in the preview');
  check((await page.locator('#plan-preview tbody tr').count()) >= 1, 'no proration lines');
  await shot(page, 'plan-change-preview', page.locator('dialog'));
  await page.click('[data-action=confirm-plan]');
  await page.locator('dialog').waitFor({ state: 'detached', timeout: 60_000 });
  await page.locator('#overview dd', { hasText: /^Pro$/ }).waitFor();

  step = 'suspend and reactivate';
  await page.click('[data-action=suspend]');
  await page.fill('dialog input[name=reason]', 'console test');
  await page.click('[data-action=confirm-suspended]');
  await expectStatus(page, 'suspended');
  check(
    (await page.locator('[data-action=change-plan]').count()) === 0,
    'plan change offered to a suspended tenant',
  );
  await page.click('[data-action=reactivate]');
  await page.click('[data-action=confirm-active]');
  await expectStatus(page, 'active');

  step = 'delete with the typed slug';
  await page.click('[data-action=delete]');
  const confirmDelete = page.locator('[data-action=confirm-delete]');
  check(await confirmDelete.isDisabled(), 'delete enabled before the slug was typed');
  await page.fill('dialog input[name=confirm]', `${slug}x`);
  check(await confirmDelete.isDisabled(), 'delete enabled with a wrong slug');
  await page.fill('dialog input[name=confirm]', slug);
  await confirmDelete.click();
  await page.locator('#backup-left').waitFor({ timeout: 60_000 });
  const backupId = await page.locator('#backup-left .backup-id').innerText();
  check(/^[0-9a-f-]{36}$/.test(backupId), `no backup id shown: ${backupId}`);
  await page.click('dialog [data-action=close]');
  await expectStatus(page, 'deleted');

  step = 'restore from the backup';
  await page.click('[data-action=restore]');
  await page.click('[data-action=confirm-restore]');
  await page.locator('dialog .job[data-status="succeeded"]').waitFor({ timeout: 60_000 });
  await page.click('dialog [data-action=close]');
  await expectStatus(page, 'active');

  step = 'service page';
  await page.click('#nav a[data-nav=service]');
  await page.locator('#health-status').waitFor();
  check((await page.locator('#health-status').innerText()) === 'healthy', 'service not healthy');
  await page.locator('#jobs-by-kind table', { hasText: 'Provisioning' }).waitFor();
  check((await page.locator('#jobs-by-kind tbody tr').count()) >= 3, 'fewer than three job kinds listed');
  await shot(page, 'service-page');
  await admin.close();

  step = 'a tenant admin sees only their tenant';
  const tenant = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const tenantRequests = watch(tenant);
  page = await tenant.newPage();
  await page.goto(`${base}/console/`);
  await page.fill('#sign-in textarea[name=token]', tenantToken);
  await page.click('#sign-in button[type=submit]');
  await page.locator('#tenant-results table').waitFor();
  const own = await page.locator('#tenant-results tbody tr').count();
  check(own === 1, `a tenant admin sees ${own} tenants`);
  check(
    (await page.locator(`#tenant-results a[data-slug="${tenantSlug}"]`).count()) === 1,
    'not their own tenant',
  );
  check((await page.getByRole('link', { name: 'New tenant' }).count()) === 0, 'New tenant offered');
  check(await page.locator('#nav a[data-nav=service]').isHidden(), 'service page offered');
  await page.click(`#tenant-results a[data-slug="${tenantSlug}"]`);
  await expectStatus(page, 'active');
  await page.locator('#audit table').waitFor();
  check(
    (await page.locator('[data-action=change-plan]').count()) === 1,
    'a tenant admin is not offered a plan change',
  );
  for (const action of ['suspend', 'reactivate', 'delete', 'restore']) {
    check(
      (await page.locator(`[data-action=${action}]`).count()) === 0,
      `a tenant admin is offered ${action}`,
    );
  }
  await page.goto(`${base}/console/#/service`);
  await page.getByText('needs the platform_admin role').waitFor();
  check(
    !tenantRequests.some((u) => new URL(u).pathname === '/api/v1/metrics'),
    'the tenant admin console asked for /api/v1/metrics',
  );
  await tenant.close();

  step = 'requests and errors';
  const foreign = requests.filter((u) => new URL(u).origin !== origin);
  check(foreign.length === 0, `requests to another host: ${foreign.join(', ')}`);
  const metricsAsked = requests.filter((u) => u.includes('/api/v1/metrics')).length;
  check(metricsAsked >= 1, 'the service page never asked for /api/v1/metrics');
  check(problems.length === 0, problems.join('\n'));
  log(`ok: ${requests.length} requests, all to ${origin}; no console errors`);
} catch (err) {
  failed = true;
  console.error(`console-test: FAILED at "${step}": ${err.message}`);
  if (problems.length) console.error(`console-test: browser problems:\n${problems.join('\n')}`);
  if (page && shots)
    await page.screenshot({ path: join(shots, 'failure.png'), fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
