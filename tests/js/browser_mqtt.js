// Headless Chromium loads browser_mqtt.html from a file: URL; the page uses
// MQTT.js's browser bundle (from node_modules) over ws. Prints the page's
// #result text once it is done; exits 1 if the page failed.
//
// Usage: node browser_mqtt.js URL PROTOCOL_VERSION PREFIX
// (a wss: URL is let through the test certificate, which Chromium cannot
// verify: its own certificate checks are not what the test is about).
'use strict';

const path = require('path');
const { pathToFileURL } = require('url');
const { withPage } = require(path.join(process.env.MIDGE_JS, 'chromium.js'));

const [url, version, prefix] = process.argv.slice(2);
// The package's exports hide dist/ from require.resolve: NODE_PATH is node_modules.
const bundle = pathToFileURL(path.join(process.env.NODE_PATH, 'mqtt', 'dist', 'mqtt.min.js')).href;
const page = pathToFileURL(path.join(__dirname, 'browser_mqtt.html'));
page.search = new URLSearchParams({ bundle, url, v: version, prefix }).toString();

withPage(async (p) => {
  await p.goto(page.href);
  await p.waitForSelector('#result:not([data-state="running"])', { timeout: 15000 });
  const state = await p.getAttribute('#result', 'data-state');
  const text = await p.textContent('#result');
  if (state !== 'done') throw new Error(`page ${state}: ${text}`);
  console.log(text);
}, { ignoreHTTPSErrors: url.startsWith('wss:') });
