// Single sign-on with a real relying party: the `openid-client` library (pinned in package.json)
// discovers Santong, sends the browser through the real sign-in form with PKCE, checks the ID
// token's signature against the JWKS, reads userinfo, refreshes, and sees a reused code refused.
// Then the browser signs out through the RP-initiated logout endpoint.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { createServer } from 'node:http';
import * as oidc from 'openid-client';
import { startServer, launchBrowser, artifacts, santongCli } from '../lib/harness.js';

let server;
let browser;
const FIRST = 'First!pass-2026';
const READY = 'Ready!pass-2026';
// The relying party's own pages: a real listener that records where the browser came back to.
let rp;
let CALLBACK;
let BYE;
let visits = [];

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  rp = createServer((req, res) => {
    visits.push(req.url);
    res.writeHead(200, { 'content-type': 'text/plain' }).end('relying party');
  });
  await new Promise((r) => rp.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${rp.address().port}`;
  CALLBACK = `${base}/callback`;
  BYE = `${base}/signed-out`;
  santongCli(server.data, ['user', 'add', '--username', 'teacher.sso', '--name', '李老师',
    '--password', FIRST, '--role', 'teacher', '--at', '440305/1144030501']);
});

after(async () => {
  await browser?.close();
  await server?.stop();
  rp?.close();
});

function registerClient(args) {
  const out = santongCli(server.data, ['oidc', 'client', 'add', ...args]);
  return {
    id: out.match(/^client_id: (\S+)$/m)?.[1],
    secret: out.match(/^client_secret: (\S+)$/m)?.[1],
  };
}

for (const lang of ['zh-CN', 'en']) {
  test(`openid-client signs in through Santong (${lang})`, async () => {
    const thirdParty = lang === 'en';
    const { id, secret } = registerClient([
      '--name', thirdParty ? 'Reading Club' : '教务系统',
      '--redirect-uri', CALLBACK, '--post-logout-uri', BYE,
      '--scope', 'openid', '--scope', 'profile', '--scope', 'santong',
      ...(thirdParty ? [] : ['--first-party']),
    ]);
    assert.ok(id && secret, 'the CLI prints the client id and secret');

    const config = await oidc.discovery(new URL(server.url), id, secret, undefined, {
      execute: [oidc.allowInsecureRequests],
    });
    // Verify ID token signatures against the provider's JWKS, not only the TLS channel.
    oidc.enableNonRepudiationChecks(config);
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const nonce = oidc.randomNonce();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: CALLBACK,
      scope: 'openid profile santong',
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      nonce,
    });

    const context = await browser.newContext({ locale: lang, javaScriptEnabled: false });
    const page = await context.newPage();
    visits = [];
    await page.goto(url.href);
    // Not signed in: Santong's own sign-in form, then the first-sign-in password change.
    assert.ok(page.url().includes('/login?next='), page.url());
    await page.fill('#username', 'teacher.sso');
    await page.fill('#password', lang === 'zh-CN' ? FIRST : READY);
    await page.click('form.form button[type=submit]');
    if (lang === 'zh-CN') {
      // First sign-in: the password change comes first, then the flow carries on by itself.
      assert.ok(page.url().includes('/account/password?next='), page.url());
      await page.fill('#old', FIRST);
      await page.fill('#new', READY);
      await page.fill('#confirm', READY);
      await page.click('form.form button[type=submit]');
    }
    if (thirdParty) {
      // A third-party client asks for consent first.
      await page.screenshot({ path: join(artifacts, `oidc-consent-${lang}.png`), fullPage: true });
      assert.ok((await page.textContent('main')).includes('Reading Club'));
      await page.click('button[value=allow]');
    }
    assert.ok(page.url().startsWith(`${CALLBACK}?`), `the browser came back to the client (at ${page.url()})`);
    const callback = page.url();

    const tokens = await oidc.authorizationCodeGrant(config, new URL(callback), {
      pkceCodeVerifier: verifier,
      expectedState: state,
      expectedNonce: nonce,
      idTokenExpected: true,
    });
    const claims = tokens.claims();
    assert.equal(claims.iss, server.url);
    assert.equal(claims.aud, id);
    assert.equal(claims.preferred_username, 'teacher.sso');
    assert.equal(claims.name, '李老师');
    assert.equal(claims.santong_school, '1144030501');

    const info = await oidc.fetchUserInfo(config, tokens.access_token, claims.sub);
    assert.equal(info.preferred_username, 'teacher.sso');
    assert.deepEqual(info.santong_roles, [{ role: 'teacher', node: '1144030501' }]);

    const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token);
    assert.notEqual(refreshed.access_token, tokens.access_token);
    assert.notEqual(refreshed.refresh_token, tokens.refresh_token);

    // The same code again is refused with the spec's error, and what it gave is revoked.
    await assert.rejects(
      oidc.authorizationCodeGrant(config, new URL(callback), {
        pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce,
      }),
      (e) => e.error === 'invalid_grant',
    );
    await assert.rejects(oidc.fetchUserInfo(config, refreshed.access_token, claims.sub));

    // RP-initiated logout: Santong asks, then returns to the registered address with the state.
    const end = oidc.buildEndSessionUrl(config, {
      id_token_hint: tokens.id_token,
      post_logout_redirect_uri: BYE,
      state: 'bye-1',
    });
    await page.goto(end.href);
    await page.screenshot({ path: join(artifacts, `oidc-logout-${lang}.png`), fullPage: true });
    await page.click('form.form button[type=submit]');
    assert.equal(page.url(), `${BYE}?state=bye-1`);
    await page.goto(`${server.url}/account`);
    assert.ok(page.url().includes('/login'), 'the Santong session ended too');
    await context.close();
  });
}
