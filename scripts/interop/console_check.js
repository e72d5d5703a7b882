'use strict';
// The broker's web console in headless Chromium, driven by playwright-core.
// playwright-core downloads no browser: this launches Debian's chromium, or
// the one SLUICE_CHROMIUM names. broker/tests/console.rs runs it against a
// broker holding QUEUE with DEPTH ready messages, and an account that may
// monitor and manage everything:
//
//   node console_check.js http://127.0.0.1:PORT USER PASSWORD QUEUE DEPTH SHOT.png
//
// It prints one `ok: ...` or `FAIL: ...` line per check and exits 0 only if
// every check passed.

const { chromium } = require('playwright-core');
const { Checks } = require('./rhea_common');

// Each wait on the page; the console polls every 2 s.
const WAIT_MS = 15000;
// The whole run, below the Rust test's bound on it (60 s), so that a hang
// is reported from here with the checks passed so far.
const WATCHDOG_MS = 55000;

// Waits until the queue's row shows `depth` ready messages. Compared in
// the page, so that no name has to be escaped into a selector.
function readyIs(page, queue, depth) {
  return page.waitForFunction(([name, depth]) => {
    const rows = [...document.querySelectorAll('#queues tbody tr')];
    const row = rows.find((row) => row.dataset.queue === name);
    return row !== undefined && row.querySelector('td.ready').textContent === depth;
  }, [queue, String(depth)], { timeout: WAIT_MS });
}

// Waits until `count` more polls have been drawn.
async function polls(page, count) {
  const drawn = await page.evaluate(() => Number(document.body.dataset.polls || 0));
  await page.waitForFunction(
    (wanted) => Number(document.body.dataset.polls || 0) >= wanted,
    drawn + count, { timeout: WAIT_MS });
}

async function checkConsole(checks, page, [url, user, password, queue, depth, shot]) {
  await page.goto(url + '/');
  checks.check(new URL(page.url()).pathname === '/console/', `/ leads to /console/: ${page.url()}`);

  await page.locator('#login').waitFor();
  await page.fill('#user', user);
  await page.fill('#password', password + 'x');
  await page.click('#login button[type=submit]');
  await page.waitForFunction(() => document.getElementById('login-error').textContent !== '');
  checks.check(
    (await page.textContent('#login-error')).includes('Wrong user name or password'),
    `a wrong password is refused: "${await page.textContent('#login-error')}"`);
  checks.check(await page.isVisible('#login') && await page.isHidden('#console'),
    'and the login form stays');

  await page.fill('#password', password);
  await page.click('#login button[type=submit]');
  await readyIs(page, queue, depth);
  checks.check(true, `logged in, queue ${queue} shows ${depth} ready messages`);
  checks.check(await page.isHidden('#login'), 'the login form is gone');
  await page.locator('#connections tbody tr').first().waitFor();
  checks.check(true, "the client's connection is listed");
  const cluster = await page.textContent('#cluster .summary');
  checks.check(cluster.includes('Node 1') && await page.locator('#cluster tbody tr').count() === 1,
    `the cluster panel shows the node and its group: "${cluster}"`);
  checks.check(
    await page.evaluate(() => localStorage.length + sessionStorage.length === 0 && document.cookie === ''),
    'the credentials are kept in no storage and no cookie');

  // A few polls, so that the sparkline has a line to draw.
  await polls(page, 2);
  await page.screenshot({ path: shot, fullPage: true });
  checks.check(true, `screenshot written to ${shot}`);

  const row = page.locator('#queues tbody tr').filter({ hasText: queue });
  const dialog = page.locator('#confirm');
  await row.getByRole('button', { name: 'Purge', exact: true }).click();
  await dialog.waitFor();
  checks.check((await dialog.textContent()).includes(queue), 'Purge asks first, naming the queue');
  await page.click('#confirm-cancel');
  await dialog.waitFor({ state: 'hidden' });
  // Had Cancel sent the purge, the next polls would show an empty queue.
  await polls(page, 2);
  checks.check(
    await row.locator('td.ready').textContent() === String(depth)
      && await page.textContent('#outcome') === '',
    'Cancel purges nothing');

  await row.getByRole('button', { name: 'Purge', exact: true }).click();
  await dialog.waitFor();
  await page.click('#confirm-ok');
  await readyIs(page, queue, 0);
  const outcome = await page.textContent('#outcome');
  checks.check(outcome.includes(`Purged ${depth} messages`), `Confirm purges: "${outcome}"`);
}

async function main() {
  const args = process.argv.slice(2);
  if (args.length !== 6) {
    console.error(`usage: node ${process.argv[1]} URL USER PASSWORD QUEUE DEPTH SCREENSHOT`);
    process.exit(2);
  }
  const checks = new Checks('console');
  const watchdog = setTimeout(() => {
    checks.check(false, `the console check did not finish within ${WATCHDOG_MS} ms`);
    process.exit(checks.exitCode());
  }, WATCHDOG_MS);
  const browser = await chromium.launch({
    executablePath: process.env.SLUICE_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // Root in a container has no sandbox to drop into.
    args: ['--no-sandbox'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
    page.setDefaultTimeout(WAIT_MS);
    // Script errors, and what the Content-Security-Policy refused (inline
    // code or style), reach the console; failed requests are expected (the
    // wrong password's 401) and log there too.
    const problems = [];
    page.on('pageerror', (error) => problems.push(error.message));
    page.on('console', (message) => {
      if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
        problems.push(message.text());
      }
    });
    // A 401 that names a scheme makes the browser open its own dialog.
    const challenges = [];
    page.on('response', (response) => {
      if (response.status() === 401 && response.headers()['www-authenticate'] !== undefined) {
        challenges.push(response.url());
      }
    });
    await checkConsole(checks, page, args);
    checks.check(problems.length === 0, `no script error or refused content: ${problems.join('; ')}`);
    checks.check(challenges.length === 0, `no 401 asked the browser for credentials: ${challenges}`);
  } catch (error) {
    checks.check(false, `the console check threw: ${error && error.stack ? error.stack : error}`);
  } finally {
    await browser.close();
  }
  clearTimeout(watchdog);
  process.exit(checks.exitCode());
}

main().catch((error) => {
  console.log(`FAIL: the browser did not start: ${error && error.stack ? error.stack : error}`);
  process.exit(1);
});
