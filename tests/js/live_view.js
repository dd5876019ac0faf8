// The built-in live view (issue 14) in headless Chromium: load it from the
// websockets listener, type a user name and password, connect, and wait until
// the DOM shows what the Rust side publishes; then a screenshot.
//
// argv: URL USER PASSWORD SCREENSHOT EXPECT
// EXPECT (JSON): {"topics": [[topic, shown payload, retained]], "absent":
// [topic], "sys": [name under $SYS/broker/]}.
// Prints "SUBSCRIBED" once the page is logged in, and one "SEEN topic" line
// per expected topic found.
'use strict';

const { withPage } = require(process.env.MIDGE_JS + '/chromium.js');

const [url, user, pass, shot, expectJson] = process.argv.slice(2);
const expect = JSON.parse(expectJson);

withPage(async (page) => {
  await page.setViewportSize({ width: 1000, height: 520 });
  await page.goto(url);
  await page.fill('#user', user);
  await page.fill('#pass', pass);
  await page.click('#connect');
  await page.waitForFunction(
    () => /^connected as /.test(document.getElementById('status').textContent),
    null, { timeout: 10000 });
  console.log('SUBSCRIBED');
  for (const [topic, payload, retained] of expect.topics) {
    const row = `li[data-topic="${topic}"] > .row`;
    await page.waitForFunction(
      ([sel, want]) => {
        const p = document.querySelector(sel + ' > .payload');
        return p && p.textContent === want;
      },
      [row, payload], { timeout: 10000 });
    const isRetained = await page.$eval(row + ' > .retain', (e) => !e.hidden);
    if (isRetained !== retained) {
      throw new Error(`${topic}: retained shown ${isRetained}, want ${retained}`);
    }
    console.log(`SEEN ${topic}`);
  }
  for (const name of expect.sys) {
    await page.waitForFunction(
      (n) => [...document.querySelectorAll('#sys td:first-child')].some((td) => td.textContent === n),
      name, { timeout: 10000 });
    console.log(`SYS ${name}`);
  }
  for (const topic of expect.absent) {
    if (await page.$(`li[data-topic="${topic}"]`)) {
      throw new Error(`${topic} is shown, the ACL does not let this user read it`);
    }
  }
  // One rate tick, so the screenshot shows the rates too.
  await page.waitForFunction(
    () => [...document.querySelectorAll('.rate')].some((e) => e.textContent !== ''),
    null, { timeout: 5000 });
  await page.screenshot({ path: shot });
  console.log('SCREENSHOT ' + shot);
});
