// The jambonz call hook against jambonz's own verb specification: the real cxbridge binary
// answers the hook (POST JSON with HTTP Basic auth, and GET with query parameters) for every
// kind of route, and each answer must pass `validate()` of @jambonz/verb-specifications — the
// package jambonz's feature server checks applications' verbs with. No browser is needed;
// the test lives here for the harness that starts the binary.

import assert from 'node:assert/strict';
import test from 'node:test';

import jambonz from '@jambonz/verb-specifications';

import { ADMIN, BIN, Env, REQUIRE_PEERS } from './harness.mjs';
import fs from 'node:fs';

const IVR = 'ivr-secret-0123456789';
const REALM = 'acme.sip.jambonz.cloud';

const EXTRA = `
[routing]
block_list = ["+1 415 555 0666"]

[ivr]
token = "${IVR}"
flags = [{ name = "vip", field = "vip" }]

[ivr.jambonz]
sip_realm = "${REALM}"
username = "jambonz"
continue_hook = "https://ivr.example.com/menu"

[[ivr.rules]]
name = "blocked"
when = { blocked = true }
action = "reject"

[[ivr.rules]]
name = "vip"
when = { flag = "vip", equals = "yes" }
action = "queue"
target = "vip"

[[ivr.rules]]
name = "owner"
action = "owner"

[[ivr.rules]]
name = "desk"
when = { dialed = "+14155550003" }
action = "dial"
target = "201"

[[ivr.rules]]
name = "partner"
when = { dialed = "+14155550001" }
action = "dial"
target = "+442079460000"

[[ivr.rules]]
name = "support"
when = { dialed = "+14155550002" }
action = "dial"
target = "sip:support@pbx.example.com"
`;

const silent = { info() {}, debug() {}, error() {}, warn() {} };

const binaryThere = fs.existsSync(BIN);

test('every jambonz answer passes jambonz\'s verb specification', { skip: !binaryThere && !REQUIRE_PEERS && `no binary at ${BIN}` }, async (t) => {
  const env = new Env('jambonz');
  t.after(async () => {
    for (const s of env.servers) await s.stop();
  });
  const hub = await env.server({ extra: EXTRA });
  const admin = { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' };
  const create = async (fields) => {
    const r = await fetch(hub.url('/api/v1/crm/contact'), { method: 'POST', headers: admin, body: JSON.stringify(fields) });
    assert.equal(r.status, 201, await r.text());
  };
  await create({ name: 'Vera VIP', phone: '+1 415 555 0143', vip: 'yes' });
  const basic = `Basic ${Buffer.from(`jambonz:${IVR}`).toString('base64')}`;
  const post = async (from, to) => {
    const body = { call_sid: 'cs', call_id: 'ci', application_sid: 'as', account_sid: 'ac', direction: 'inbound', from, to, caller_name: '', call_status: 'trying', sip_status: 100 };
    const r = await fetch(hub.url('/api/v1/ivr/jambonz'), { method: 'POST', headers: { authorization: basic, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    assert.equal(r.status, 200, await r.clone().text());
    return r.json();
  };
  const get = async (from, to) => {
    const q = new URLSearchParams({ call_sid: 'cs', direction: 'inbound', from, to, caller_name: '', call_status: 'trying' });
    const r = await fetch(hub.url(`/api/v1/ivr/jambonz?${q}`), { headers: { authorization: basic } });
    assert.equal(r.status, 200, await r.clone().text());
    return r.json();
  };

  const cases = [
    ['blocked caller', '+14155550666', '+14155550000', (v) => assert.deepEqual(v, [{ verb: 'sip:decline', status: 486, reason: 'Busy Here' }])],
    ['vip queue', '+14155550143', '+14155550000', (v) => assert.deepEqual(v, [{ verb: 'enqueue', name: 'vip' }])],
    ['extension', '+14155550142', '+14155550003', (v) => {
      assert.equal(v[0].verb, 'dial');
      assert.deepEqual(v[0].target, [{ type: 'user', name: `201@${REALM}` }]);
    }],
    ['carrier number', '+14155550199', '+14155550001', (v) => assert.deepEqual(v[0].target, [{ type: 'phone', number: '+442079460000' }])],
    ['sip uri', '+14155550199', '+14155550002', (v) => assert.deepEqual(v[0].target, [{ type: 'sip', sipUri: 'sip:support@pbx.example.com' }])],
    ['no rule: continue', '+14155550199', '+14155550000', (v) => assert.deepEqual(v, [{ verb: 'redirect', actionHook: 'https://ivr.example.com/menu' }])],
  ];
  for (const [name, from, to, check] of cases) {
    for (const [how, ask] of [['POST', post], ['GET', get]]) {
      const verbs = await ask(from, to);
      assert.ok(Array.isArray(verbs) && verbs.length > 0, `${name} (${how}): jambonz hangs up on an empty answer: ${JSON.stringify(verbs)}`);
      assert.doesNotThrow(() => jambonz.validate(silent, verbs), `${name} (${how}): ${JSON.stringify(verbs)}`);
      check(verbs);
    }
  }
  // The validator is strict enough to catch a wrong shape.
  assert.throws(() => jambonz.validate(silent, [{ verb: 'dial' }]), /target/);
});
