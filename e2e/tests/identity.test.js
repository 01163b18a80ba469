// Sign-in walk-through in Chinese and English: wrong password, first-sign-in password change,
// sign-out, lockout after repeated failures, and unlock by the security administrator.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startServer, launchBrowser, artifacts, santongCli, totp } from '../lib/harness.js';

let server;
let browser;
const FIRST = 'First!pass-2026';
const READY = 'Ready!pass-2026';
let adminSecret = null;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  santongCli(server.data, ['user', 'add', '--username', 'security', '--role', 'security_admin', '--password', FIRST]);
  for (const lang of ['zh', 'en']) {
    santongCli(server.data, ['user', 'add', '--username', `teacher.${lang}`, '--name', lang === 'zh' ? '王老师' : 'Ms Wang',
      '--password', FIRST, '--role', 'teacher', '--at', '440305/1144030501']);
  }
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const t = {
  'zh-CN': { user: 'teacher.zh', name: '王老师', invalid: '用户名或密码不正确', forced: '首次登录或密码已过期', changed: '密码已修改', signOut: '退出', signIn: '登录', locked: '尝试次数过多', unlock: '解除锁定', unlocked: '已解除登录锁定' },
  en: { user: 'teacher.en', name: 'Ms Wang', invalid: 'The user name or password is not correct', forced: 'This is your first sign-in', changed: 'Your password was changed', signOut: 'Sign out', signIn: 'Sign in', locked: 'Too many attempts', unlock: 'Unlock', unlocked: 'The sign-in lock was cleared' },
};

async function signIn(page, username, password) {
  await page.goto(`${server.url}/login`);
  await page.fill('#username', username);
  await page.fill('#password', password);
  await page.click('form.form button[type=submit]');
}

async function changePassword(page, from, to) {
  await page.fill('#old', from);
  await page.fill('#new', to);
  await page.fill('#confirm', to);
  await page.click('form.form button[type=submit]');
}

for (const lang of ['zh-CN', 'en']) {
  test(`sign in, change password, sign out, lockout and unlock in ${lang}`, async () => {
    const x = t[lang];
    const context = await browser.newContext({ locale: lang, javaScriptEnabled: false });
    const page = await context.newPage();
    try {
      await signIn(page, x.user, 'wrong-password');
      assert.ok((await page.textContent('.errors')).includes(x.invalid));
      await page.screenshot({ path: join(artifacts, `login-error-${lang}.png`) });

      await page.fill('#password', FIRST);
      await page.click('form.form button[type=submit]');
      assert.match(page.url(), /\/account\/password$/);
      assert.ok((await page.textContent('.banner')).includes(x.forced));
      await changePassword(page, FIRST, READY);
      assert.ok((await page.textContent('.ok')).includes(x.changed));
      await page.goto(`${server.url}/`);
      assert.ok((await page.textContent('header .who')).includes(x.name));
      await page.click(`header .who button:has-text("${x.signOut}")`);
      assert.ok((await page.textContent('header .who')).includes(x.signIn));

      // Five wrong passwords lock the account for a while.
      for (let i = 0; i < 5; i++) await signIn(page, x.user, `wrong-${i}`);
      await signIn(page, x.user, READY);
      assert.ok((await page.textContent('.errors')).includes(x.locked));
      await page.screenshot({ path: join(artifacts, `login-locked-${lang}.png`) });

      // The security administrator unlocks it.
      const admin = await browser.newContext({ locale: lang, javaScriptEnabled: false });
      const ap = await admin.newPage();
      await signIn(ap, 'security', adminSecret ? READY : FIRST);
      if (ap.url().endsWith('/login/mfa')) {
        await ap.fill('#code', totp(adminSecret));
        await ap.click('form.form button[type=submit]');
      }
      if (ap.url().endsWith('/account/password')) await changePassword(ap, FIRST, READY);
      const users = `${server.url}/admin/users?q=${x.user}`;
      await ap.goto(users);
      // Admins must enrol a second factor first: read the key, answer with a code.
      if (ap.url().endsWith('/account/mfa')) {
        adminSecret = (await ap.textContent('#secret')).trim();
        await ap.screenshot({ path: join(artifacts, `mfa-enrol-${lang}.png`), fullPage: true });
        await ap.fill('#code', totp(adminSecret));
        await ap.click('form.form button[type=submit]');
        assert.equal((await ap.$$('ul.codes li')).length, 10, 'ten recovery codes shown once');
        await ap.goto(users);
      }
      await ap.click(`table.list >> text=${x.user}`);
      await ap.click(`.actions button:has-text("${x.unlock}")`);
      assert.ok((await ap.textContent('.ok')).includes(x.unlocked));
      await ap.screenshot({ path: join(artifacts, `unlock-${lang}.png`), fullPage: true });
      await admin.close();

      await signIn(page, x.user, READY);
      assert.ok((await page.textContent('header .who')).includes(x.name));
    } finally {
      await context.close();
    }
  });
}
