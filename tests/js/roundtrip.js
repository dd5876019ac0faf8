// One MQTT.js scenario, shared by Node.js (mqtt_clients.js) and the browser
// page (browser_mqtt.html): a subscriber on `PREFIX/#` at QoS 2 gets a
// publisher's QoS 0, 1 and 2 messages (the QoS 2 one retained), then a late
// subscriber gets only the retained one, flagged retained. Resolves to what
// arrived, as a plain object the tests compare exactly.
(function (root) {
  'use strict';

  async function roundtrip(mqtt, url, options, prefix) {
    const base = { reconnectPeriod: 0, connectTimeout: 10000, clean: true, ...options };

    function connect(clientId) {
      return new Promise((resolve, reject) => {
        const c = mqtt.connect(url, { ...base, clientId });
        c.once('connect', () => resolve(c));
        c.once('error', reject);
        c.once('close', () => reject(new Error(`${clientId}: closed before CONNACK`)));
      });
    }

    function collect(client, n) {
      const got = [];
      return new Promise((resolve) => {
        client.on('message', (topic, payload, packet) => {
          got.push({ topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain });
          if (got.length === n) resolve(got);
        });
      });
    }

    const sub = await connect(`${prefix}-sub`);
    const three = collect(sub, 3);
    const granted = await sub.subscribeAsync(`${prefix}/#`, { qos: 2 });
    const pub = await connect(`${prefix}-pub`);
    // Each resolves on its acknowledgement: PUBACK for 1, PUBCOMP for 2.
    await pub.publishAsync(`${prefix}/q0`, 'zero', { qos: 0 });
    await pub.publishAsync(`${prefix}/q1`, 'one', { qos: 1 });
    await pub.publishAsync(`${prefix}/q2`, 'two', { qos: 2, retain: true });
    const live = await three;
    const late = await connect(`${prefix}-late`);
    const one = collect(late, 1);
    await late.subscribeAsync(`${prefix}/#`, { qos: 2 });
    const retained = await one;
    await Promise.all([sub, pub, late].map((c) => c.endAsync()));
    return { granted: granted.map((g) => g.qos), live, retained };
  }

  if (typeof module === 'object' && module.exports) {
    module.exports = { roundtrip };
  } else {
    root.roundtrip = roundtrip;
  }
})(this);
