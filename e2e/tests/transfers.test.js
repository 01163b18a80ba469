// A cross-province transfer in the browser, in Chinese and English: a school in 邵东市 (湖南)
// gives the parent the pupil's national student number; the receiving school in 南山区 (广东)
// starts the transfer; the receiving county, the receiving province, the sending province, the
// sending school and the sending county each sign in and approve from their inbox; the receiving
// school then opens the pupil's record with the history from the old school. No JavaScript.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startServer, launchBrowser, artifacts, santongCli } from '../lib/harness.js';

let server;
let browser;
const FIRST = 'First!pass-2026';
const READY = 'Ready!pass-2026';
const RECEIVING = '1440305001';
const SENDING = '1430582001';

// Who signs, in the order of the chain, and where.
const chain = [
  ['ns', 'official', '440305'],
  ['gd', 'official', '440000'],
  ['hn', 'official', '430000'],
  ['send', 'school_admin', `430582/${SENDING}`],
  ['sd', 'official', '430582'],
];

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  for (const lang of ['zh', 'en']) {
    santongCli(server.data, ['user', 'add', '--username', `recv.${lang}`, '--password', FIRST,
      '--role', 'school_admin', '--at', `440305/${RECEIVING}`]);
    for (const [who, role, at] of chain) {
      santongCli(server.data, ['user', 'add', '--username', `${who}.${lang}`, '--password', FIRST,
        '--role', role, '--at', at]);
    }
  }
  santongCli(server.data, ['policy', 'set', 'session', '{"mfa_required_privileged": false}']);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

// Signs in for the first time (the password must be changed) in a fresh context.
async function signIn(lang, user) {
  const context = await browser.newContext({ locale: lang, javaScriptEnabled: false });
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

const t = {
  'zh-CN': { suffix: 'zh', pupil: '何雨桐', reason: '随父母到深圳务工', pending: '审批中', done: '已完成', arrived: '转入' },
  en: { suffix: 'en', pupil: '唐梓萱', reason: 'parents work in Shenzhen', pending: 'In approval', done: 'Completed', arrived: 'Transfer in' },
};

for (const lang of ['zh-CN', 'en']) {
  test(`transfers: across provinces, every approver from their inbox (${lang})`, async () => {
    const x = t[lang];
    const open = [];
    try {
      // The old school reads the number off its roster (J-numbers are shown whole).
      const sender = await signIn(lang, `send.${x.suffix}`);
      open.push(sender.context);
      await sender.page.goto(`${server.url}/schools/${SENDING}/students`);
      const row = sender.page.locator('table.list tbody tr', { hasText: x.pupil });
      const number = (await row.locator('td.mono').first().textContent()).trim();
      assert.match(number, /^J430582\d{11}[\dX]$/);

      // The new school starts the transfer.
      const recv = await signIn(lang, `recv.${x.suffix}`);
      open.push(recv.context);
      await recv.page.goto(`${server.url}/transfers/new`);
      assert.equal(await recv.page.inputValue('#to_school'), RECEIVING);
      await recv.page.fill('#student_number', number);
      await recv.page.fill('#name', x.pupil);
      await recv.page.fill('#reason', x.reason);
      await recv.page.click('form.form button[type=submit]');
      const url = recv.page.url();
      assert.match(url, /\/transfers\/[0-9a-f-]{36}$/);
      assert.ok((await recv.page.textContent('#status')).includes(x.pending));

      // Each party of the chain finds it in its inbox and approves.
      for (const [who] of chain) {
        const s = who === 'send' ? sender : await signIn(lang, `${who}.${x.suffix}`);
        if (s !== sender) open.push(s.context);
        await s.page.goto(`${server.url}/transfers`);
        await s.page.click(`table.list a:has-text("${x.pupil}")`);
        assert.equal(s.page.url(), url, `${who} opened the transfer from the inbox`);
        await s.page.click('button[value=approve]');
        assert.equal(s.page.url(), url);
      }
      await recv.page.goto(url);
      assert.ok((await recv.page.textContent('#status')).includes(x.done));
      await recv.page.screenshot({ path: join(artifacts, `transfer-done-${lang}.png`), fullPage: true });

      // The new school has the pupil, with the old school's history.
      await recv.page.click(`a[href^="/students/"]`);
      const history = await recv.page.textContent('#history + table');
      assert.ok(history.includes(SENDING) && history.includes(x.arrived), history);
      await recv.page.goto(`${server.url}/schools/${RECEIVING}/students`);
      assert.ok((await recv.page.textContent('table.list')).includes(x.pupil));
    } finally {
      for (const c of open) await c.close();
    }
  });
}
