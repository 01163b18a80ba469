// Foundation walk-through in Chinese and in English: home page, language switch, browsing
// 广东省 → 深圳市 → 南山区 by clicking, the breadcrumb, a retired code and a 404; screenshots saved.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startServer, launchBrowser, artifacts } from '../lib/harness.js';

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const texts = {
  'zh-CN': { home: '欢迎使用三通', regions: '行政区划', nation: '全国', other: 'English', otherHome: 'Welcome to Santong', notFound: '没有代码为 999999 的行政区划。' },
  en: { home: 'Welcome to Santong', regions: 'Regions', nation: 'China', other: '中文', otherHome: '欢迎使用三通', notFound: 'There is no region with code 999999.' },
};

for (const lang of ['zh-CN', 'en']) {
  test(`browse the region tree in ${lang}`, async () => {
    const t = texts[lang];
    const context = await browser.newContext({ locale: lang, javaScriptEnabled: false });
    const page = await context.newPage();
    try {
      await page.goto(`${server.url}/`);
      assert.equal(await page.getAttribute('html', 'lang'), lang);
      assert.equal(await page.textContent('h1'), t.home);
      await page.screenshot({ path: join(artifacts, `home-${lang}.png`), fullPage: true });

      // Switch language and back: a cookie remembers the choice.
      await page.click(`.lang a:has-text("${t.other}")`);
      assert.equal(await page.textContent('h1'), t.otherHome);
      await page.goto(`${server.url}/`);
      assert.equal(await page.textContent('h1'), t.otherHome, 'the choice is remembered');
      await page.click('.lang a');
      assert.equal(await page.textContent('h1'), t.home);

      await page.click(`header nav >> text=${t.regions}`);
      assert.match(page.url(), /\/regions$/);
      await page.click('table.list >> text=广东省');
      await page.click('table.list >> text=深圳市');
      await page.click('table.list >> text=南山区');
      assert.match(page.url(), /\/regions\/440305$/);
      const crumbs = await page.$$eval('nav.crumbs li', (lis) => lis.map((li) => li.textContent.trim()));
      assert.deepEqual(crumbs, [t.nation, '广东省', '深圳市', '南山区']);
      assert.equal(await page.textContent('h1'), '南山区');
      await page.screenshot({ path: join(artifacts, `nanshan-${lang}.png`), fullPage: true });

      // Back up the tree through the breadcrumb.
      await page.click('nav.crumbs >> text=深圳市');
      assert.match(page.url(), /\/regions\/440300$/);

      // Search without JavaScript: a plain GET form.
      await page.goto(`${server.url}/regions`);
      await page.fill('#q', '莱芜');
      await page.click('form.search button');
      assert.match(page.url(), /q=/);
      assert.ok((await page.textContent('table.list')).includes('370116'));

      // A retired code points to its successor.
      await page.goto(`${server.url}/regions/371200`);
      assert.ok((await page.textContent('.notice')).includes('370100'));
      await page.click('.notice a');
      assert.equal(await page.textContent('h1'), '济南市');
      await page.screenshot({ path: join(artifacts, `retired-${lang}.png`), fullPage: true });

      const res = await page.goto(`${server.url}/regions/999999`);
      assert.equal(res.status(), 404);
      assert.ok((await page.textContent('main')).includes(t.notFound));
      await page.screenshot({ path: join(artifacts, `not-found-${lang}.png`) });
    } finally {
      await context.close();
    }
  });
}
