// Headless Chromium for midge's browser tests, through playwright-core and the
// system browser (never one playwright downloads). The Rust side
// (tests/common/js.rs) sets MIDGE_CHROMIUM to the binary and
// MIDGE_CHROMIUM_FLAGS to the flags this machine needs (JSON); playwright
// makes a fresh, empty --user-data-dir for each launch.
'use strict';

const { chromium } = require('playwright-core');

/** Launch the system Chromium headless; fails clearly when it is missing. */
async function launch(options = {}) {
  const executablePath = process.env.MIDGE_CHROMIUM;
  if (!executablePath) {
    throw new Error('MIDGE_CHROMIUM is not set: Chromium is not installed (run scripts/setup.sh test)');
  }
  const args = JSON.parse(process.env.MIDGE_CHROMIUM_FLAGS || '[]');
  return chromium.launch({ executablePath, args, headless: true, timeout: 20000, ...options });
}

/**
 * Run `body(page, browser)` in a fresh page (of a context made with
 * `contextOptions`, e.g. `{ ignoreHTTPSErrors: true }` for a test
 * certificate); the page's console and errors are copied to stderr (for the
 * test's failure message), and the browser is closed whatever happens. Exits
 * the process with 1 on an error.
 */
async function withPage(body, contextOptions = {}) {
  let browser;
  try {
    browser = await launch();
    const page = await browser.newPage(contextOptions);
    page.on('console', (m) => console.error(`[page ${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => console.error(`[page error] ${e.message}`));
    await body(page, browser);
  } catch (e) {
    console.error(e && e.stack ? e.stack : String(e));
    process.exitCode = 1;
  } finally {
    if (browser) await browser.close().catch(() => {});
  }
}

module.exports = { launch, withPage };
