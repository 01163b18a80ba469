// Importing students in the browser, in Chinese and in English, with no JavaScript: a school
// admin of the demo school in 南山区 downloads the templates, uploads a CSV with two good new pupils
// and one bad row, waits for the background check, reads the preview (counts, the bad row with its
// cells marked, phones masked), downloads the rejected rows, writes the rows that passed, finds
// the pupils on the roster, and undoes the batch (the confirmation is required) so they are gone.
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
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

// What each language's walk-through uploads and expects. The Chinese file uses the Chinese header
// of the brief, without a BOM; the English one the English template's column names, with the BOM
// Excel's "CSV UTF-8" writes, so both header languages and both encodings of UTF-8 are read.
const WALKS = {
  'zh-CN': {
    user: 'imp.zh',
    header: '姓名,性别,出生日期,民族,身份证号,年级,监护人,与学生关系,监护人电话',
    templateStart: '姓名,性别,出生日期',
    good: [
      { name: '林可欣', sex: '女', birth: '2016-04-12', ethnic: '汉族', guardian: '陈丽', relation: '母亲', phone: '13812345678' },
      { name: '黄子轩', sex: '男', birth: '2016-07-30', ethnic: '汉族', guardian: '李芳', relation: '母亲', phone: '13887654321' },
    ],
    bad: { name: '王小禾', guardian: '赵敏', relation: '母亲', ethnic: '汉族', phone: '13800001111' },
    sexColumn: '性别',
    bom: false,
  },
  en: {
    user: 'imp.en',
    header: 'Name,Sex,Date of birth,Ethnic group,ID number,Grade,Guardian name,Relationship,Guardian phone',
    templateStart: 'Name,Sex,Date of birth',
    good: [
      { name: '韩雨桐', sex: 'Female', birth: '2016-02-03', ethnic: 'Han', guardian: '孙静', relation: 'Mother', phone: '13811112222' },
      { name: '周明远', sex: 'Male', birth: '2016-11-20', ethnic: 'Han', guardian: '吴婷', relation: 'Mother', phone: '13833334444' },
    ],
    bad: { name: '郑小舟', guardian: '钱红', relation: 'Mother', ethnic: 'Han', phone: '13855556666' },
    sexColumn: 'Sex',
    bom: true,
  },
};

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  files = mkdtempSync(join(tmpdir(), 'santong-e2e-import-'));
  for (const user of [...Object.values(WALKS).map((w) => w.user), 'imp.link']) {
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

async function signIn(lang, user) {
  const context = await browser.newContext({ locale: lang, javaScriptEnabled: false, acceptDownloads: true });
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

// Clicks a download link as a person would and returns the file's bytes and suggested name.
async function download(page, selector) {
  const [dl] = await Promise.all([page.waitForEvent('download'), page.click(selector)]);
  assert.equal(await dl.failure(), null, `download ${selector} failed`);
  return { name: dl.suggestedFilename(), body: readFileSync(await dl.path()) };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Reloads the batch page until its state is `want` (the page's own meta refresh may navigate at
// the same moment: an interrupted navigation is simply retried). Fails at once on a refused file.
async function waitForState(page, url, want) {
  const deadline = Date.now() + 30_000;
  let state;
  for (;;) {
    try {
      state = await page.getAttribute('#state', 'data-state', { timeout: 5_000 });
    } catch {
      state = undefined;
    }
    if (state === want) return;
    if (state === 'failed') {
      assert.fail(`the batch failed: ${await page.textContent('main').catch(() => '?')}`);
    }
    if (Date.now() > deadline) assert.fail(`the batch at ${url} stayed "${state}", never "${want}"`);
    await sleep(500);
    try {
      await page.goto(url);
    } catch (e) {
      if (!/interrupted|ERR_ABORTED|frame was detached/i.test(String(e))) throw e;
    }
  }
}

function csvFor(w) {
  const line = (cells) => cells.join(',');
  const rows = [
    w.header,
    ...w.good.map((p) => line([p.name, p.sex, p.birth, p.ethnic, '', '3', p.guardian, p.relation, p.phone])),
    line([w.bad.name, 'X', '2016-13-01', w.bad.ethnic, '', '3', w.bad.guardian, w.bad.relation, w.bad.phone]),
  ];
  const text = Buffer.from(rows.join('\r\n') + '\r\n', 'utf8');
  return w.bom ? Buffer.concat([BOM, text]) : text;
}

async function roster(page, name) {
  await page.goto(`${server.url}/schools/${SCHOOL}/students?q=${encodeURIComponent(name)}`);
  return page.textContent('main');
}

for (const [lang, w] of Object.entries(WALKS)) {
  test(`imports (${lang}): templates, upload, preview, rejected rows, commit, undo`, async () => {
    const { context, page } = await signIn(lang, w.user);
    try {
      // The school page links the import page.
      await page.goto(`${server.url}/schools/${SCHOOL}`);
      await page.click('#import');
      assert.equal(page.url(), `${server.url}/schools/${SCHOOL}/import`);

      // Templates: the workbook is a zip, the CSV starts with a BOM and the columns in this language.
      const xlsx = await download(page, '#template-xlsx');
      assert.match(xlsx.name, /\.xlsx$/);
      assert.equal(xlsx.body.subarray(0, 2).toString('latin1'), 'PK', 'the XLSX template is a zip');
      const csv = await download(page, '#template-csv');
      assert.match(csv.name, /\.csv$/);
      assert.ok(csv.body.subarray(0, 3).equals(BOM), 'the CSV template starts with a BOM');
      const head = csv.body.subarray(3).toString('utf8');
      assert.ok(head.startsWith(w.templateStart), head.slice(0, 80));

      // Upload: two good new pupils and one bad row; "all or nothing" chosen.
      const path = join(files, `students-${lang}.csv`);
      writeFileSync(path, csvFor(w));
      await page.setInputFiles('#file', path);
      await page.check('input[name=mode][value=all]');
      await page.click('form[enctype="multipart/form-data"] button[type=submit]');
      const batch = page.url();
      assert.match(batch, /\/imports\/[0-9a-f-]{36}$/);
      assert.ok((await page.textContent('h1')).includes(`students-${lang}.csv`));

      // The check runs as a job; then the preview shows the counts and the rejected row.
      await waitForState(page, batch, 'checked');
      assert.equal((await page.textContent('#rows')).trim(), '3');
      assert.equal((await page.textContent('#new')).trim(), '2');
      assert.equal((await page.textContent('#rejected')).trim(), '1');
      const rejects = page.locator('#rejects tbody tr');
      assert.equal(await rejects.count(), 1);
      const cells = rejects.first().locator('td');
      // Columns: the line number, the file's nine columns, the problems.
      assert.equal(await cells.count(), 11);
      assert.equal((await cells.nth(0).textContent()).trim(), '4', 'the bad row is line 4 of the file');
      assert.equal((await cells.nth(1).textContent()).trim(), w.bad.name);
      assert.ok(await rejects.first().locator('td.bad').count() >= 1, 'a cell is marked');
      assert.equal(await cells.nth(2).getAttribute('class'), 'bad', 'the sex cell is marked');
      assert.equal((await cells.nth(2).textContent()).trim(), 'X');
      assert.equal(await cells.nth(3).getAttribute('class'), 'bad', 'the birth date cell is marked');
      assert.equal(await cells.nth(1).getAttribute('class'), null, 'the name cell is not marked');
      const problems = (await cells.nth(10).textContent()).trim();
      assert.ok(problems.includes(w.sexColumn), `the problem names the sex column: ${problems}`);
      // The page masks the phone; the downloads carry it whole (for correcting the row).
      const shown = await page.textContent('#rejects');
      assert.ok(!shown.includes(w.bad.phone), 'the phone is masked on the page');
      assert.ok(shown.includes(`${w.bad.phone.slice(0, 3)}****${w.bad.phone.slice(-4)}`), shown);
      await page.screenshot({ path: join(artifacts, `import-preview-${lang}.png`), fullPage: true });

      // The rejected rows as CSV (the file's columns, then 错误说明) and as XLSX.
      const bad = await download(page, '#rejects-csv');
      const badText = bad.body.toString('utf8').replace(/^\uFEFF/, '');
      const [badHead, ...badRows] = badText.split(/\r?\n/).filter((l) => l !== '');
      assert.ok(badHead.startsWith(w.header.split(',').slice(0, 3).join(',')), badHead);
      assert.ok(badHead.includes('错误说明'), badHead);
      assert.equal(badRows.length, 1, badText);
      assert.ok(badRows[0].startsWith(`${w.bad.name},X,2016-13-01,`), badRows[0]);
      assert.ok(badRows[0].includes(w.bad.phone), badRows[0]);
      const badXlsx = await download(page, '#rejects-xlsx');
      assert.equal(badXlsx.body.subarray(0, 2).toString('latin1'), 'PK', 'the rejected rows XLSX is a zip');

      // Write the rows that passed (the page offers that when some rows have problems).
      assert.equal(await page.getAttribute('#commit-form input[name=mode]', 'value'), 'valid');
      await page.click('#commit');
      await waitForState(page, batch, 'committed');
      for (const p of w.good) {
        const row = page.locator('table.list tbody tr', { hasText: p.name });
        await roster(page, p.name);
        assert.equal(await row.count(), 1, `${p.name} is on the roster`);
        const number = (await row.locator('td.mono').first().textContent()).trim();
        assert.match(number, new RegExp(`^J${SCHOOL.slice(1, 7)}${p.birth.replaceAll('-', '')}\\d{3}[0-9X]$`));
      }
      assert.ok(!(await roster(page, w.bad.name)).includes(w.bad.name), 'the bad row was not written');

      // Undo: the browser will not submit without the confirmation (required checkbox) ...
      await page.goto(batch);
      assert.equal(await page.locator('input[name=confirm]:invalid').count(), 1);
      await page.click('#undo');
      await sleep(500);
      assert.equal(page.url(), batch);
      assert.equal(await page.getAttribute('#state', 'data-state'), 'committed');
      assert.equal(await page.locator('#form-error').count(), 0, 'nothing was posted');
      // ... and the server refuses a post without it too.
      const csrf = await page.getAttribute('form[action$="/undo"] input[name=_csrf]', 'value');
      const refused = await context.request.post(`${batch}/undo`, { form: { _csrf: csrf }, maxRedirects: 0 });
      assert.equal(refused.status(), 422);
      // ... ticked, the batch is undone and the pupils are off the roster.
      await page.check('input[name=confirm]');
      await page.click('#undo');
      await waitForState(page, batch, 'undone');
      for (const p of w.good) {
        assert.ok(!(await roster(page, p.name)).includes(p.name), `${p.name} is gone from the roster`);
      }

      // The import page lists the batch as undone.
      await page.goto(`${server.url}/schools/${SCHOOL}/import`);
      const recent = await page.textContent('#batches');
      assert.ok(recent.includes(`students-${lang}.csv`), recent);
    } finally {
      await context.close();
    }
  });
}

// The school admin may import (the import page and its form are there for them), so the school
// page links it.
test('imports: the school page links the import page for the school\'s own admin', async () => {
  const { context, page } = await signIn('zh-CN', 'imp.link');
  try {
    await page.goto(`${server.url}/schools/${SCHOOL}/import`);
    assert.equal(await page.locator('form[enctype="multipart/form-data"]').count(), 1, 'the admin may import');
    await page.goto(`${server.url}/schools/${SCHOOL}`);
    assert.equal(await page.getAttribute('#import', 'href', { timeout: 2_000 }), `/schools/${SCHOOL}/import`);
  } finally {
    await context.close();
  }
});
