// Schools in the browser, in Chinese and English: a county official finds the demo county's
// schools, opens a teaching point (first with a mistake, which is marked at its field), and sees
// it under its parent school with its history.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startServer, launchBrowser, artifacts, santongCli } from '../lib/harness.js';

let server;
let browser;
const FIRST = 'First!pass-2026';
const READY = 'Ready!pass-2026';

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  for (const lang of ['zh', 'en']) {
    santongCli(server.data, ['user', 'add', '--username', `official.${lang}`, '--password', FIRST,
      '--role', 'official', '--at', '440305']);
  }
  // Officials need a second factor; these two walk through schools, not enrolment.
  santongCli(server.data, ['policy', 'set', 'session', '{"mfa_required_privileged": false}']);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const t = {
  'zh-CN': { user: 'official.zh', code: '1440305901', name: '南山第一教学点', parentMissing: '教学点须填写所属学校', points: '下属教学点', created: '创建' },
  en: { user: 'official.en', code: '1440305902', name: 'Nanshan point two', parentMissing: 'A teaching point needs its parent', points: 'Teaching points', created: 'Opened' },
};

for (const lang of ['zh-CN', 'en']) {
  test(`schools: list, open a teaching point, see its history (${lang})`, async () => {
    const x = t[lang];
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

      await page.goto(`${server.url}/schools?kind=211`);
      const rows = await page.$$('table.list tbody tr');
      assert.ok(rows.length > 0, 'the demo county has primary schools');
      await page.screenshot({ path: join(artifacts, `schools-${lang}.png`), fullPage: true });

      await page.goto(`${server.url}/schools/new`);
      await page.fill('#code', x.code);
      await page.fill('#county', '440305');
      await page.fill('#name', x.name);
      await page.selectOption('#kind', '218');
      await page.selectOption('#urban_rural', '220');
      await page.fill('#grades', '1-3');
      await page.click('form.form button[type=submit]');
      // The mistake is named at its field; what was typed stays.
      assert.ok((await page.textContent('.field-error')).includes(x.parentMissing));
      assert.equal(await page.inputValue('#name'), x.name);
      await page.screenshot({ path: join(artifacts, `school-error-${lang}.png`), fullPage: true });
      await page.fill('#parent_code', '1440305001');
      await page.click('form.form button[type=submit]');
      assert.ok(page.url().endsWith(`/schools/${x.code}`), page.url());
      assert.ok((await page.textContent('h1')).includes(x.name));
      assert.ok((await page.textContent('table.list')).includes(x.created));

      await page.goto(`${server.url}/schools/1440305001`);
      assert.ok((await page.textContent('main')).includes(x.points));
      assert.ok((await page.textContent('main')).includes(x.name));
    } finally {
      await context.close();
    }
  });
}
