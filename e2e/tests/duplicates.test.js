// The demo's duplicate record in the browser: a boy enrolled at the demo school in 邵东市 (湖南)
// was enrolled again, with the same ID number, at a primary school of 南山区 (广东), so he has a
// temporary L-number there and a case is open. The 南山 school finds the case from the record,
// sees the other school's side masked, and merges its record into the existing one after
// confirming; the 邵东 school then reads the resolved case in English. No JavaScript.
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
const PUPIL = '邓浩然';

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  santongCli(server.data, ['user', 'add', '--username', 'dup.recv', '--password', FIRST,
    '--role', 'school_admin', '--at', `440305/${RECEIVING}`]);
  santongCli(server.data, ['user', 'add', '--username', 'dup.send', '--password', FIRST,
    '--role', 'school_admin', '--at', `430582/${SENDING}`]);
  santongCli(server.data, ['policy', 'set', 'session', '{"mfa_required_privileged": false}']);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

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

test('duplicates: the second school merges its temporary record, the first reads the result', async () => {
  const open = [];
  try {
    const recv = await signIn('zh-CN', 'dup.recv');
    open.push(recv.context);
    // The roster shows the temporary number; the record says a case is open and links it.
    await recv.page.goto(`${server.url}/schools/${RECEIVING}/students?q=${encodeURIComponent(PUPIL)}`);
    const row = recv.page.locator('table.list tbody tr', { hasText: PUPIL });
    assert.match((await row.locator('td.mono').first().textContent()).trim(), /^L440305\d{12}$/);
    await row.locator('a').first().click();
    assert.ok((await recv.page.textContent('.duplicate-banner')).includes('重复学籍'));
    await recv.page.click('.duplicate-banner a');
    const url = recv.page.url();
    assert.match(url, /\/duplicates\/[0-9a-f-]{36}$/);
    const records = await recv.page.textContent('#records');
    // Its own side in full, the other school's side masked.
    assert.ok(records.includes(PUPIL) && records.includes('邓**') && records.includes('邵东市演示小学'), records);
    assert.ok(!records.includes('430582201601159'), 'the ID number is not shown');

    // Merging asks for a reason and a confirmation, then the case is resolved.
    await recv.page.fill('#reason', '经核实为同一名学生');
    await recv.page.check('input[name=confirm]');
    await recv.page.click('button.danger');
    assert.equal(recv.page.url(), url);
    assert.ok((await recv.page.textContent('#status')).includes('已合并'));
    assert.ok((await recv.page.textContent('#steps')).includes('经核实为同一名学生'));
    await recv.page.screenshot({ path: join(artifacts, 'duplicate-merged-zh-CN.png'), fullPage: true });
    await recv.page.goto(`${server.url}/schools/${RECEIVING}/students?q=${encodeURIComponent(PUPIL)}`);
    assert.ok(!(await recv.page.textContent('main')).includes(PUPIL));

    // The first school keeps the child and reads the resolved case (the other side masked).
    const send = await signIn('en', 'dup.send');
    open.push(send.context);
    await send.page.goto(`${server.url}/duplicates?show=all`);
    await send.page.click('table.list tbody a');
    assert.equal(send.page.url(), url);
    assert.ok((await send.page.textContent('#status')).includes('Merged'));
    const seen = await send.page.textContent('#records');
    assert.ok(seen.includes(PUPIL) && seen.includes('邓**'), seen);
    await send.page.goto(`${server.url}/schools/${SENDING}/students?q=${encodeURIComponent(PUPIL)}`);
    assert.ok((await send.page.textContent('table.list')).includes(PUPIL));
  } finally {
    for (const c of open) await c.close();
  }
});
