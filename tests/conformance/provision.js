// SPDX-License-Identifier: MIT
// provision.js: one device provisioning with the official Azure DPS Node SDK, as a device maker would write it
//
// Usage: node provision.js SPEC_JSON
//   SPEC_JSON = {
//     "modules": "/path/to/node_modules",        // where `npm ci` installed the pinned SDK
//     "host": "127.0.0.1:PORT",                  // the SDK takes host:port
//     "idScope": "0ne00000A0A",
//     "registrationId": "dev-1",
//     "transport": "mqtt" | "mqttws",
//     "attestation": "sas" | "group-sas" | "x509",
//     "key": "<base64>",                         // sas: the device key
//     "groupKey": "<base64>",                    // group-sas: derived here, as device makers do
//     "derivedKey": "<base64>",                  // group-sas: optional, checked against ours
//     "expiry": 1764150000,                      // sas: optional token expiry (to test an expired token)
//     "cert": "/path/dev.crt", "certKey": "/path/dev.key",   // x509
//     "payload": {...},                          // optional custom allocation payload
//     "timeoutMs": 20000
//   }
// The CA comes from NODE_EXTRA_CA_CERTS. Prints one JSON line on stdout:
//   {"ok":true,"result":{...registrationState...}}  exit 0
//   {"ok":false,"error":{"name":...,"message":...,"status":...}}  exit 1
// Exit 2 for a bad SPEC, 3 for the overall timeout.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

function finish(code, obj) {
  process.stdout.write(JSON.stringify(obj) + '\n', () => process.exit(code));
}

let spec;
try {
  spec = JSON.parse(process.argv[2] || '');
} catch (e) {
  finish(2, { ok: false, error: { name: 'UsageError', message: 'argument 1 must be a JSON spec: ' + e.message } });
  return;
}
for (const k of ['modules', 'host', 'idScope', 'registrationId', 'transport', 'attestation']) {
  if (typeof spec[k] !== 'string' || spec[k] === '') {
    finish(2, { ok: false, error: { name: 'UsageError', message: 'spec needs a string "' + k + '"' } });
    return;
  }
}

// Load the SDK from the npm ci cache, not from wherever node would look first.
const sdkRequire = createRequire(path.join(spec.modules, 'package.json'));
const { ProvisioningDeviceClient } = sdkRequire('azure-iot-provisioning-device');
const { Mqtt, MqttWs } = sdkRequire('azure-iot-provisioning-device-mqtt');
const { SymmetricKeySecurityClient } = sdkRequire('azure-iot-security-symmetric-key');
const { X509Security } = sdkRequire('azure-iot-security-x509');
const { SharedAccessSignature } = sdkRequire('azure-iot-common');

// The SDK's WebSocket transport hard-codes port 443 in _getConnectionUri()
// ('wss://' + host + ':443/$iothub/websocket'); dps-sim listens on a free
// port, so keep the SDK's path and let host:port through.
class MqttWsAnyPort extends MqttWs {
  _getConnectionUri(request) {
    return 'wss://' + request.provisioningHost + '/$iothub/websocket';
  }
}

// The SDK always signs for an hour from now (anHourFromNow()); an expired
// token needs the same signature code with a chosen expiry.
class FixedExpirySecurityClient extends SymmetricKeySecurityClient {
  constructor(registrationId, key, expiry) {
    super(registrationId, key);
    this._expiry = expiry;
  }

  createSharedAccessSignature(idScope, callback) {
    const sas = SharedAccessSignature.create(idScope + '/registrations/' + this._registrationId,
                                             'registration', this._symmetricKey, this._expiry);
    if (callback) {
      callback(null, sas);
      return undefined;
    }
    return Promise.resolve(sas);
  }
}

// Group enrollment: deviceKey = base64(HMAC-SHA256(base64-decode(groupKey), registrationId))
function deriveKey(groupKey, registrationId) {
  return crypto.createHmac('sha256', Buffer.from(groupKey, 'base64')).update(registrationId, 'utf8').digest('base64');
}

function securityClient() {
  switch (spec.attestation) {
    case 'sas':
    case 'group-sas': {
      let key = spec.key;
      if (spec.attestation === 'group-sas') {
        key = deriveKey(spec.groupKey, spec.registrationId);
        if (spec.derivedKey && spec.derivedKey !== key) {
          throw new Error('the key derived with node crypto differs from dpsctl derive-key');
        }
      }
      if (spec.expiry) {
        return new FixedExpirySecurityClient(spec.registrationId, key, spec.expiry);
      }
      return new SymmetricKeySecurityClient(spec.registrationId, key);
    }
    case 'x509':
      return new X509Security(spec.registrationId, {
        cert: fs.readFileSync(spec.cert, 'utf8'),
        key: fs.readFileSync(spec.certKey, 'utf8'),
      });
    default:
      throw new Error('unknown attestation ' + spec.attestation);
  }
}

function transport() {
  switch (spec.transport) {
    case 'mqtt':
      return new Mqtt();
    case 'mqttws':
      return new MqttWsAnyPort();
    default:
      throw new Error('unknown transport ' + spec.transport);
  }
}

function describeError(err) {
  const e = { name: (err && (err.name !== 'Error' ? err.name : err.constructor.name)) || 'Error',
              message: String((err && err.message) || err) };
  if (err && typeof err.code !== 'undefined') {
    e.code = err.code;          // e.g. the CONNACK return code from mqtt.js
  }
  if (err && err.transportObject && err.transportObject.topic) {
    const m = err.transportObject.topic.match(/^\$dps\/registrations\/res\/(\d+)\//);
    if (m) {
      e.status = Number(m[1]);
    }
  }
  if (err && err.result) {
    e.result = err.result;
  }
  return e;
}

let client;
try {
  client = ProvisioningDeviceClient.create(spec.host, spec.idScope, transport(), securityClient());
  if (spec.payload !== undefined) {
    client.setProvisioningPayload(spec.payload);
  }
} catch (err) {
  finish(2, { ok: false, error: describeError(err) });
  return;
}

const timer = setTimeout(() => {
  finish(3, { ok: false, error: { name: 'Timeout', message: 'no answer from the SDK in ' + (spec.timeoutMs || 20000) + ' ms' } });
}, spec.timeoutMs || 20000);

client.register((err, result) => {
  clearTimeout(timer);
  if (err) {
    finish(1, { ok: false, error: describeError(err) });
  } else {
    finish(0, { ok: true, result: result });
  }
});
