// Two-step verification in Chinese and in English: an official enrols an authenticator app at the
// first sign-in (required for officials), signs out, and signs in again with a code; a wrong code
// gets the translated message.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startServer, launchBrowser, artifacts, santongCli, totp } from '../lib/harness.js';

let server;
let browser;
const FIRST = 'First!pass-2026';
const READY = 'Ready!pass-2026';

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  for (const lang of ['zh', 'en']) {
    santongCli(server.data, ['user', 'add', '--username', `official.${lang}`, '--name', lang === 'zh' ? '张科长' : 'Mr Zhang',
      '--password', FIRST, '--role', 'official', '--at', '440305']);
  }
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const t = {
  'zh-CN': { user: 'official.zh', name: '张科长', required: '必须启用两步验证', enabled: '两步验证已启用', prompt: '输入动态验证码', invalid: '验证码不正确', signOut: '退出' },
  en: { user: 'official.en', name: 'Mr Zhang', required: 'must turn on two-step verification', enabled: 'Two-step verification is on', prompt: 'Enter your code', invalid: 'The code is not correct', signOut: 'Sign out' },
};

async function signIn(page, username, password) {
  await page.goto(`${server.url}/login`);
  await page.fill('#username', username);
  await page.fill('#password', password);
  await page.click('form.form button[type=submit]');
}

for (const lang of ['zh-CN', 'en']) {
  test(`two-step verification: enrol, sign out, sign in with a code (${lang})`, async () => {
    const x = t[lang];
    const context = await browser.newContext({ locale: lang, javaScriptEnabled: false });
    const page = await context.newPage();
    try {
      await signIn(page, x.user, FIRST);
      await page.fill('#old', FIRST);
      await page.fill('#new', READY);
      await page.fill('#confirm', READY);
      await page.click('form.form button[type=submit]');
      // Any page now leads to the enrolment first.
      await page.goto(`${server.url}/account`);
      assert.ok(page.url().includes('/account/mfa'), page.url());
      assert.ok((await page.textContent('.banner')).includes(x.required));
      const secret = (await page.textContent('#secret')).trim();
      await page.fill('#code', '000000');
      await page.click('form.form button[type=submit]');
      assert.ok((await page.textContent('.errors')).includes(x.invalid));
      await page.fill('#code', totp(secret));
      await page.click('form.form button[type=submit]');
      assert.ok((await page.textContent('.ok')).includes(x.enabled));
      assert.equal((await page.$$('ul.codes li')).length, 10, 'ten recovery codes shown once');
      await page.screenshot({ path: join(artifacts, `mfa-enrolled-${lang}.png`), fullPage: true });
      await page.click(`header .who button:has-text("${x.signOut}")`);

      // Signing in again asks for a code before anything else.
      await signIn(page, x.user, READY);
      assert.ok(page.url().endsWith('/login/mfa'), page.url());
      assert.ok((await page.textContent('h1')).includes(x.prompt));
      await page.screenshot({ path: join(artifacts, `mfa-prompt-${lang}.png`), fullPage: true });
      await page.fill('#code', totp(secret));
      await page.click('form.form button[type=submit]');
      assert.ok((await page.textContent('header .who')).includes(x.name));
      await page.click(`header .who button:has-text("${x.signOut}")`);
      await page.goto(`${server.url}/account`);
      assert.ok(page.url().includes('/login'), 'signed out');
    } finally {
      await context.close();
    }
  });
}
