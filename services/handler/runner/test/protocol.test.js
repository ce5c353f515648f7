'use strict';
// The runner protocol as the handler sees it: token, assignment, loads, versions, limits.

const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const { describe, it, before, after } = require('node:test');
const { startRunner, MAIN } = require('./helpers');

describe('runner protocol', () => {
  let runner;
  before(async () => {
    runner = await startRunner({ env: { FNHOOK_RUNNER_MAX_BODY: '1024', FNHOOK_RUNNER_MAX_FUNCTIONS: '6' } });
  });
  after(() => runner.stop());

  it('answers /healthz without a token, with the state only', async () => {
    const res = await runner.anonymous('GET', '/healthz');
    assert.equal(res.status, 200);
    assert.deepEqual(res.json, { state: 'idle' });
  });

  it('refuses every other endpoint without the right token', async () => {
    const wrongSameLength = runner.token.replace(/^./, (c) => (c === 'a' ? 'b' : 'a'));
    assert.equal(wrongSameLength.length, runner.token.length);
    const cases = [
      undefined,
      '',
      'Bearer',
      `Bearer ${wrongSameLength}`,
      `Bearer ${runner.token}x`,
      `Bearer ${runner.token.slice(0, -1)}`,
      `Basic ${runner.token}`,
      runner.token,
    ];
    for (const authorization of cases) {
      const headers = authorization === undefined ? {} : { authorization };
      for (const [method, path] of [
        ['GET', '/_fnhook/state'],
        ['POST', '/_fnhook/assign'],
        ['PUT', '/_fnhook/functions/hello'],
        ['GET', '/_fnhook/run/hello'],
        ['GET', '/_fnhook/logs/hello'],
        ['GET', '/_fnhook/logs?after=0&wait=5'],
      ]) {
        const res = await runner.anonymous(method, path, { headers, body: method === 'GET' ? undefined : {} });
        assert.equal(res.status, 401, `${method} ${path} with ${authorization}`);
        assert.equal(res.json.error.code, 'unauthorized');
      }
    }
    const lower = await runner.call('GET', '/_fnhook/state', { headers: { authorization: `bearer ${runner.token}` } });
    assert.equal(lower.status, 200, 'the auth scheme is case-insensitive');
  });

  it('refuses loads before a tenant is assigned', async () => {
    const res = await runner.load('hello', { code: 'module.exports = async () => 1' });
    assert.equal(res.status, 409);
    assert.equal(res.json.error.code, 'not_assigned');
  });

  it('is assigned once, then answers 409', async () => {
    for (const tenant of ['Acme', '-acme', 'a'.repeat(64), 'ac me', 42]) {
      const bad = await runner.call('POST', '/_fnhook/assign', { body: { tenant } });
      assert.equal(bad.status, 400, `tenant ${tenant}`);
    }
    const first = await runner.assign('acme');
    assert.equal(first.status, 200);
    assert.deepEqual(first.json, { tenant: 'acme' });
    for (const tenant of ['acme', 'globex']) {
      const again = await runner.assign(tenant);
      assert.equal(again.status, 409);
      assert.equal(again.json.error.code, 'already_assigned');
    }
    const health = await runner.anonymous('GET', '/healthz');
    assert.deepEqual(health.json, { state: 'assigned' }, 'no tenant name in the health answer');
  });

  it('loads, reports the state, and runs the loaded version', async () => {
    const load = await runner.load('hello', { version: 2, code: 'module.exports = async () => ({ body: { v: 2 } })' });
    assert.equal(load.status, 200);
    assert.equal(load.json.name, 'hello');
    assert.equal(load.json.version, 2);
    assert.equal(typeof load.json.loadMs, 'number');

    const state = await runner.call('GET', '/_fnhook/state');
    assert.equal(state.json.tenant, 'acme');
    assert.deepEqual(state.json.functions, { hello: 2 });
    assert.equal(state.json.inflight, 0);

    const run = await runner.run('hello');
    assert.equal(run.status, 200);
    assert.deepEqual(run.json, { v: 2 });
    assert.equal(run.headers['x-fnhook-version'], '2');
    const after = await runner.call('GET', '/_fnhook/state');
    assert.ok(after.json.idleMs >= 0 && after.json.idleMs < 1000, 'idleMs counts from the last call');
  });

  it('treats a load of an older or equal version as a no-op', async () => {
    for (const version of [1, 2]) {
      const res = await runner.load('hello', { version, code: 'module.exports = async () => ({ body: { v: "old" } })' });
      assert.equal(res.status, 200);
      assert.equal(res.json.version, 2);
    }
    assert.deepEqual((await runner.run('hello')).json, { v: 2 });
  });

  it('answers 409 stale_version when the loaded version is older than asked', async () => {
    const stale = await runner.run('hello', '', { headers: { 'x-fnhook-min-version': '3' } });
    assert.equal(stale.status, 409);
    assert.equal(stale.json.error.code, 'stale_version');
    assert.equal(stale.headers['x-fnhook-error'], 'stale_version', 'runner errors are marked for the gateway');
    assert.equal(stale.headers['x-fnhook-version'], '2');
    const fresh = await runner.run('hello', '', { headers: { 'x-fnhook-min-version': '2' } });
    assert.equal(fresh.status, 200);
  });

  it('answers 422 with the line of a CommonJS syntax error and keeps the old version', async () => {
    const res = await runner.load('hello', {
      version: 3,
      code: 'module.exports = async () => {\n  const a = 1;\n  return a +;\n};\n',
    });
    assert.equal(res.status, 422);
    assert.equal(res.json.error.code, 'compile_error');
    assert.match(res.json.error.message, /SyntaxError/);
    assert.match(res.json.error.message, /line 3/);
    assert.deepEqual((await runner.run('hello')).json, { v: 2 });
    assert.deepEqual((await runner.call('GET', '/_fnhook/state')).json.functions, { hello: 2 });
  });

  it('answers 422 with the line of an ES module syntax error', async () => {
    const res = await runner.load('esm-broken', {
      code: 'import fs from "node:fs";\n\nexport default async () => {\n  return {;\n};\n',
    });
    assert.equal(res.status, 422);
    assert.equal(res.json.error.code, 'compile_error');
    assert.match(res.json.error.message, /SyntaxError/);
    assert.match(res.json.error.message, /line 4/);
  });

  it('answers 422 for an error thrown at top level, with its line', async () => {
    const cjs = await runner.load('throws', { code: '\nconst x = 1;\nthrow new Error("no config " + x);\n' });
    assert.equal(cjs.status, 422);
    assert.equal(cjs.json.error.message, 'Error: no config 1 (line 3)');
    const esm = await runner.load('throws-esm', { code: 'export default () => 1;\nnull.boom;\n' });
    assert.equal(esm.status, 422);
    assert.match(esm.json.error.message, /TypeError.*\(line 2\)/);
  });

  it('answers 422 when the module does not export a function', async () => {
    const cjs = await runner.load('not-fn', { code: 'module.exports = { hello: 1 };' });
    assert.equal(cjs.status, 422);
    assert.match(cjs.json.error.message, /module\.exports/);
    const esm = await runner.load('not-fn-esm', { code: 'export const x = 1;' });
    assert.equal(esm.status, 422);
    assert.match(esm.json.error.message, /export default/);
  });

  it('answers 424 naming a module missing from the cache', async () => {
    const res = await runner.load('needs-dep', {
      code: 'module.exports = async () => 1',
      dependencies: { 'left-pad': '1.3.0' },
    });
    assert.equal(res.status, 424);
    assert.equal(res.json.error.code, 'module_missing');
    assert.match(res.json.error.message, /left-pad@1\.3\.0/);
  });

  it('rejects bad names and bad load bodies with 400', async () => {
    assert.equal((await runner.load('Bad_Name', { code: 'x' })).status, 400);
    const cases = [
      { version: 0, code: 'module.exports = () => 1' },
      { version: 1.5, code: 'module.exports = () => 1' },
      { version: 1 },
      { version: 1, code: 'module.exports = () => 1', timeoutMs: -1 },
      { version: 1, code: 'module.exports = () => 1', configuration: [] },
      { version: 1, code: 'module.exports = () => 1', dependencies: { '../../etc': '1.0.0' } },
      { version: 1, code: 'module.exports = () => 1', dependencies: { ok: '../1.0.0' } },
    ];
    for (const body of cases) {
      const res = await runner.call('PUT', '/_fnhook/functions/fine', { body });
      assert.equal(res.status, 400, JSON.stringify(body));
    }
    const notJson = await runner.call('PUT', '/_fnhook/functions/fine', { body: '{nope', headers: { 'content-type': 'application/json' } });
    assert.equal(notJson.status, 400);
    assert.equal(notJson.json.error.code, 'invalid_json');
  });

  it('bounds protocol bodies to 2 MiB and run bodies to FNHOOK_RUNNER_MAX_BODY', async () => {
    const huge = await runner.load('huge', { code: `module.exports = () => 1; // ${'x'.repeat(2 * 1024 * 1024)}` });
    assert.equal(huge.status, 413);
    assert.equal(huge.json.error.code, 'too_large');

    await runner.load('echo', { code: 'module.exports = async (ctx) => ({ body: ctx.rawBody })' });
    const small = await runner.run('echo', '', { method: 'POST', body: 'x'.repeat(1024) });
    assert.equal(small.status, 200);
    assert.equal(small.raw.length, 1024);
    const declared = await runner.run('echo', '', { method: 'POST', body: 'x'.repeat(1025) });
    assert.equal(declared.status, 413);
    assert.equal(declared.json.error.code, 'too_large');
    const chunked = await runner.run('echo', '', { method: 'POST', body: 'x'.repeat(4000), chunked: true });
    assert.equal(chunked.status, 413);
    const chunkedSmall = await runner.run('echo', '', { method: 'POST', body: 'y'.repeat(1000), chunked: true });
    assert.equal(chunkedSmall.status, 200);
    assert.equal(chunkedSmall.text, 'y'.repeat(1000));
  });

  it('answers 404 for unknown paths and functions, and unloads', async () => {
    const unknown = await runner.call('GET', '/nope');
    assert.equal(unknown.status, 404);
    assert.equal(unknown.json.error.code, 'not_found');
    const missing = await runner.run('ghost');
    assert.equal(missing.status, 404);
    assert.equal(missing.json.error.code, 'function_not_loaded');
    assert.equal(missing.headers['x-fnhook-error'], 'function_not_loaded');

    const del = await runner.call('DELETE', '/_fnhook/functions/hello');
    assert.equal(del.status, 204);
    assert.equal((await runner.run('hello')).status, 404);
    assert.equal((await runner.call('DELETE', '/_fnhook/functions/hello')).status, 404);
    assert.equal((await runner.call('GET', '/_fnhook/state')).json.functions.hello, undefined);
  });

  it('holds at most FNHOOK_RUNNER_MAX_FUNCTIONS functions', async () => {
    const have = Object.keys((await runner.call('GET', '/_fnhook/state')).json.functions).length;
    for (let i = have; i < 6; i++) {
      assert.equal((await runner.load(`fill-${i}`, { code: 'module.exports = () => 1' })).status, 200);
    }
    const over = await runner.load('one-too-many', { code: 'module.exports = () => 1' });
    assert.equal(over.status, 429);
    assert.equal(over.json.error.code, 'too_many_functions');
  });
});

describe('runner configuration', () => {
  it('exits 1 with one line when the token is missing', () => {
    const result = spawnSync(process.execPath, [MAIN], { env: { PATH: process.env.PATH }, encoding: 'utf8' });
    assert.equal(result.status, 1);
    assert.equal(result.stderr, 'fnhook runner: FNHOOK_RUNNER_TOKEN is required\n');
  });
});
