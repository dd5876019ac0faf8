// The browser's own view of the broker's close frames: a page opens raw
// WebSockets (subprotocol mqtt) to midge and prints, as one JSON line, the
// CloseEvent (code, reason, wasClean) of a connection whose session is taken
// over by a second one with the same client id, and of one that sends a
// malformed packet (a PUBLISH with QoS 3).
//
// Usage: node browser_close.js URL
'use strict';

const path = require('path');
const { pathToFileURL } = require('url');
const { withPage } = require(path.join(process.env.MIDGE_JS, 'chromium.js'));

const url = process.argv[2];

withPage(async (page) => {
  // A file: page: about:blank may not reach loopback (local network access checks).
  await page.goto(pathToFileURL(path.join(__dirname, 'blank.html')).href);
  const result = await page.evaluate(async (url) => {
    // CONNECT, MQTT 3.1.1, clean session, keep-alive 60, client id `id`.
    const connect = (id) => new Uint8Array([0x10, 12 + id.length, 0, 4, 77, 81, 84, 84, 4, 2, 0, 60,
      0, id.length, ...Array.from(id, (c) => c.charCodeAt(0))]);
    // Open, send CONNECT, wait for CONNACK; `closed` resolves with the CloseEvent.
    const open = (id) => new Promise((resolve, reject) => {
      const ws = new WebSocket(url, 'mqtt');
      ws.binaryType = 'arraybuffer';
      const closed = new Promise((done) => ws.addEventListener('close', (e) =>
        done({ code: e.code, reason: e.reason, wasClean: e.wasClean })));
      ws.onopen = () => ws.send(connect(id));
      ws.onmessage = (m) => {
        if (new Uint8Array(m.data)[0] === 0x20) resolve({ ws, closed });
      };
      ws.onerror = () => reject(new Error(`WebSocket ${id} failed`));
    });
    const first = await open('dup');
    const second = await open('dup');
    const takenOver = await first.closed;
    second.ws.close(1000);
    const bad = await open('bad');
    bad.ws.send(new Uint8Array([0x36, 4, 0, 1, 116, 0]));
    const malformed = await bad.closed;
    return { takenOver, malformed };
  }, url);
  console.log(JSON.stringify(result));
});
