// Students in the browser, in Chinese and English: a school administrator enrols a pupil (first
// with an ID number that has a typing error), sees the record masked, and the full record only
// after stating a purpose.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startServer, launchBrowser, artifacts, santongCli } from '../lib/harness.js';

let server;
let browser;
const FIRST = 'First!pass-2026';
const READY = 'Ready!pass-2026';

// A valid resident ID number (GB 11643 check character) for a made-up child.
function idNumber(body17) {
  const w = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
  const sum = [...body17].reduce((s, d, i) => s + Number(d) * w[i], 0);
  return body17 + '10X98765432'[sum % 11];
}

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  for (const lang of ['zh', 'en']) {
    santongCli(server.data, ['user', 'add', '--username', `head.${lang}`, '--password', FIRST,
      '--role', 'school_admin', '--at', '440305/1440305001']);
  }
  santongCli(server.data, ['policy', 'set', 'session', '{"mfa_required_privileged": false}']);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const t = {
  'zh-CN': { user: 'head.zh', name: '陈小雨', seq: '022', check: '校验位不符', purposeLabel: '核对学籍信息' },
  en: { user: 'head.en', name: 'Chen Xiaoyu', seq: '024', check: 'last character does not match', purposeLabel: 'checking the record' },
};

for (const lang of ['zh-CN', 'en']) {
  test(`students: enrol with a mistake, masked record, full record for a purpose (${lang})`, async () => {
    const x = t[lang];
    const id = idNumber(`44030520180305${x.seq}`);
    const typo = id.slice(0, 17) + (id[17] === '0' ? '1' : '0');
    const context = await browser.newContext({ locale: lang, javaScriptEnabled: false });
    const page = await context.newPage();
    try {
      await page.goto(`${server.url}/login`);
      await page.fill('#username', x.user);
      await page.fill('#password', FIRST);
      await page.click('form.form button[type=submit]');
      await page.fill('#old', FIRST);
      await page.fill('#new', READY);
      await page.fill('#confirm', READY);
      await page.click('form.form button[type=submit]');

      await page.goto(`${server.url}/schools/1440305001/students/new`);
      await page.fill('#name', x.name);
      await page.fill('#birth_date', '2018-03-05');
      await page.fill('#id_number', typo);
      await page.selectOption('#sex', '2');
      await page.fill('#grade', '2');
      await page.fill('#enrolled_on', '2025-09-01');
      await page.fill('#guardian_name', '陈芳');
      await page.fill('#guardian_relation', '母亲');
      await page.fill('#guardian_phone', '19000001234');
      await page.click('form.form button[type=submit]');
      assert.ok((await page.textContent('.field-error')).includes(x.check));
      await page.screenshot({ path: join(artifacts, `student-error-${lang}.png`), fullPage: true });
      await page.fill('#id_number', id);
      await page.click('form.form button[type=submit]');
      assert.ok(/\/students\/[0-9a-f-]{36}$/.test(page.url()), page.url());
      const masked = await page.textContent('#id-number');
      assert.ok(masked.includes('440305***********') && !masked.includes('20180305'), masked);
      assert.ok((await page.textContent('#phone')).includes('190****1234'));

      await page.fill('#purpose', x.purposeLabel);
      await page.click('form.form button[type=submit]');
      assert.equal((await page.textContent('#id-number')).trim(), id);
      await page.screenshot({ path: join(artifacts, `student-full-${lang}.png`), fullPage: true });

      await page.goto(`${server.url}/schools/1440305001/students`);
      const roster = await page.textContent('table.list');
      assert.ok(roster.includes(x.name) && !roster.includes(id));
    } finally {
      await context.close();
    }
  });
}
