// OneRoster and staff imports in the browser, without JavaScript: a school admin of the demo
// school opens the school's OneRoster exchange page from the school page, downloads the package
// (a zip whose users file carries no ID number), uploads it back — a dry run first, then for real
// — and reads that nothing changed; then imports a staff list through the staff page's link and
// finds the new teacher on the staff list.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, launchBrowser, artifacts, santongCli } from '../lib/harness.js';

let server;
let browser;
let files;
const FIRST = 'First!pass-2026';
const READY = 'Ready!pass-2026';
const SCHOOL = '1440305001';

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  files = mkdtempSync(join(tmpdir(), 'santong-e2e-oneroster-'));
  for (const user of ['or.admin', 'or.staff']) {
    santongCli(server.data, ['user', 'add', '--username', user, '--password', FIRST,
      '--role', 'school_admin', '--at', `440305/${SCHOOL}`]);
  }
  santongCli(server.data, ['policy', 'set', 'session', '{"mfa_required_privileged": false}']);
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (files) rmSync(files, { recursive: true, force: true });
});

async function signIn(user) {
  const context = await browser.newContext({ locale: 'zh-CN', javaScriptEnabled: false, acceptDownloads: true });
  const page = await context.newPage();
  await page.goto(`${server.url}/login`);
  await page.fill('#username', user);
  await page.fill('#password', FIRST);
  await page.click('form.form button[type=submit]');
  await page.fill('#old', FIRST);
  await page.fill('#new', READY);
  await page.fill('#confirm', READY);
  await page.click('form.form button[type=submit]');
  return { context, page };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitForState(page, url, want) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    let state;
    try {
      state = await page.getAttribute('#state', 'data-state', { timeout: 5_000 });
    } catch {
      state = undefined;
    }
    if (state === want) return;
    if (state === 'failed') assert.fail(`the batch failed: ${await page.textContent('main')}`);
    if (Date.now() > deadline) assert.fail(`the batch at ${url} stayed "${state}", never "${want}"`);
    await sleep(500);
    try {
      await page.goto(url);
    } catch (e) {
      if (!/interrupted|ERR_ABORTED|frame was detached/i.test(String(e))) throw e;
    }
  }
}

test('oneroster: the package goes out masked and comes back unchanged', async () => {
  const { context, page } = await signIn('or.admin');
  try {
    await page.goto(`${server.url}/schools/${SCHOOL}`);
    await page.click('#oneroster');
    assert.equal(page.url(), `${server.url}/schools/${SCHOOL}/oneroster`);
    const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#export')]);
    assert.equal(await dl.failure(), null);
    assert.match(dl.suggestedFilename(), /^oneroster-1440305001-\d{4}\.zip$/);
    const zip = readFileSync(await dl.path());
    assert.equal(zip.subarray(0, 2).toString('latin1'), 'PK', 'the package is a zip');
    const path = join(files, 'package.zip');
    writeFileSync(path, zip);

    // A dry run (ticked by default) writes nothing and says so.
    await page.setInputFiles('#file', path);
    await page.click('form[enctype="multipart/form-data"] button[type=submit]');
    assert.ok((await page.textContent('#report h2')).includes('未写入'), await page.textContent('main'));
    // For real: imported, with nothing to change.
    await page.setInputFiles('#file', path);
    await page.uncheck('input[name=dry_run]');
    await page.click('form[enctype="multipart/form-data"] button[type=submit]');
    assert.equal((await page.textContent('#report h2')).trim(), '已导入');
    const summary = await page.textContent('#summary');
    assert.ok(summary.includes('新建班级 0 个') && summary.includes('编入班级 0 人次'), summary);
    assert.ok(summary.includes('拒绝 0 行'), summary);
    await page.screenshot({ path: join(artifacts, 'oneroster-import.png'), fullPage: true });
  } finally {
    await context.close();
  }
});

test('staff import: from the staff page to a new teacher on the staff list', async () => {
  const { context, page } = await signIn('or.staff');
  try {
    await page.goto(`${server.url}/schools/${SCHOOL}/teachers`);
    await page.click('#import-teachers');
    assert.equal(page.url(), `${server.url}/schools/${SCHOOL}/import?kind=teachers`);
    assert.ok((await page.textContent('h1')).includes('导入教职工'));
    // 440305 19850601 023 and its check character.
    const body17 = '44030519850601023';
    const w = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const sum = [...body17].reduce((s, d, i) => s + Number(d) * w[i], 0);
    const id = body17 + '10X98765432'[sum % 11];
    const path = join(files, '教职工.csv');
    writeFileSync(path, `姓名,性别,出生日期,身份证号,教师资格,职称,岗位类别,任教学科\r\n`
      + `苏老师,男,1985-06-01,${id},小学教师资格,二级教师,专任教师,科学\r\n`);
    await page.setInputFiles('#file', path);
    await page.click('form[enctype="multipart/form-data"] button[type=submit]');
    const batch = page.url();
    assert.match(batch, /\/imports\/[0-9a-f-]{36}$/);
    await waitForState(page, batch, 'checked');
    assert.equal((await page.textContent('#new')).trim(), '1');
    await page.click('#commit');
    await waitForState(page, batch, 'committed');
    await page.goto(`${server.url}/schools/${SCHOOL}/teachers?q=${encodeURIComponent('苏老师')}`);
    const staff = await page.textContent('main');
    assert.ok(staff.includes('苏老师'), staff);
    assert.ok(!staff.includes(id), 'the ID number is masked on the staff list');
  } finally {
    await context.close();
  }
});
