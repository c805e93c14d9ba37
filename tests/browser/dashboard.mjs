// Drives the dashboard in the machine's headless Chromium (Debian's `chromium` package) with playwright-core.
// Run by tests/dashboard.rs against a real gateway:
//
//   node tests/browser/dashboard.mjs <base url> <screenshot path>
//
// Credentials come from the environment: JARVIS_UI_OPERATOR / JARVIS_UI_VIEWER as `username:password`.
// Talks to the Rust side over stdio: prints `ready-for-live-event` once the page is live, then reads one
// line, the id of the event the test appended, and waits for it to show in the live feed.
// Exits non-zero with the reason on the first failed expectation.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch {
  console.error('playwright-core is missing: run `npm ci` in tests/browser (scripts/test.sh does)');
  process.exit(2);
}

const [, , base, screenshot] = process.argv;
if (!base || !screenshot) {
  console.error('usage: node tests/browser/dashboard.mjs <base url> <screenshot path>');
  process.exit(2);
}
const credentials = (name) => {
  const value = process.env[name];
  if (!value || !value.includes(':')) {
    console.error(`${name} must be username:password`);
    process.exit(2);
  }
  const i = value.indexOf(':');
  return [value.slice(0, i), value.slice(i + 1)];
};
const operator = credentials('JARVIS_UI_OPERATOR');
const viewer = credentials('JARVIS_UI_VIEWER');
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT = 60_000;

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function readLine() {
  const { value, done } = await lines.next();
  if (done) throw new Error('the test closed stdin before sending an event id');
  return value.trim();
}

const step = (what) => console.log(`step: ${what}`);

const profile = mkdtempSync(join(tmpdir(), 'jarvis-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  viewport: { width: 1366, height: 900 },
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
context.setDefaultTimeout(TIMEOUT);

const problems = [];
let failed = false;
try {
  const page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console error: ${msg.text()}`);
  });

  async function signIn([username, password]) {
    await page.goto(`${base}/#/login`);
    await page.fill('#username', username);
    await page.fill('#password', password);
    await page.click('#login-form button[type=submit]');
    await page.waitForSelector('#risk-state');
  }

  step('operator signs in and sees the equity chart');
  await signIn(operator);
  await page.waitForSelector('#equity-chart svg path.series');
  await page.waitForSelector('#kpis .kpi');

  step('the live stream connects; a new event shows up');
  await page.waitForSelector('body[data-live="connected"]');
  console.log('ready-for-live-event');
  const eventId = await readLine();
  await page.waitForSelector(`#live-feed li[data-event-id="${eventId}"]`);

  step('operator presses the kill switch');
  await page.click('#kill-switch[data-command="halt"]');
  await page.click('#confirm-command[data-command="halt"]');
  await page.waitForFunction(() => document.querySelector('#risk-state')?.textContent === 'HALTED');
  await page.waitForSelector('#kill-switch[data-command="resume"]');
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`screenshot: ${screenshot}`);

  step('event explorer shows the causal chain of an event');
  await page.click('#nav a[data-page="events"]');
  await page.click('#event-results tbody tr');
  await page.waitForSelector('#causal-chain li.current');

  step('viewer signs in and sees no command buttons');
  await page.click('#logout');
  await page.waitForSelector('#login-form');
  await signIn(viewer);
  await page.waitForSelector('#risk-state');
  const buttons = await page.locator('[data-command]').count();
  if (buttons !== 0) throw new Error(`the viewer sees ${buttons} command button(s)`);
  const viewerShot = screenshot.replace(/(\.png)?$/, '-viewer.png');
  await page.screenshot({ path: viewerShot, fullPage: true });
  console.log(`screenshot: ${viewerShot}`);

  if (problems.length) throw new Error(`the page reported errors:\n${problems.join('\n')}`);
  console.log('dashboard ok');
} catch (err) {
  failed = true;
  console.error(`dashboard test failed: ${err.message}`);
  if (problems.length) console.error(problems.join('\n'));
  const page = context.pages()[0];
  if (page) {
    const failure = screenshot.replace(/(\.png)?$/, '-failure.png');
    await page.screenshot({ path: failure, fullPage: true }).catch(() => {});
    console.error(`screenshot of the failure: ${failure}`);
  }
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
