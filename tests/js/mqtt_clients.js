// MQTT.js in Node.js against midge over ws or wss: runs roundtrip.js's
// scenario and prints what arrived as one JSON line.
//
// Usage: node mqtt_clients.js URL PROTOCOL_VERSION CA_FILE|'' PREFIX
'use strict';

const fs = require('fs');
const mqtt = require('mqtt');
const { roundtrip } = require('./roundtrip.js');

const [url, version, caFile, prefix] = process.argv.slice(2);
const options = { protocolVersion: Number(version) };
if (caFile) options.ca = fs.readFileSync(caFile);

const timer = setTimeout(() => {
  console.error('mqtt_clients.js: timed out');
  process.exit(2);
}, 20000);
roundtrip(mqtt, url, options, prefix).then(
  (result) => {
    clearTimeout(timer);
    console.log(JSON.stringify(result));
  },
  (e) => {
    console.error(e && e.stack ? e.stack : String(e));
    process.exit(1);
  },
);
