'use strict';
// Runaway tenant code: timeouts, synchronous loops, memory blow-ups and crashes must cost the
// tenant no more than the timeout plus a short restart; SIGTERM drains calls in flight.

const assert = require('node:assert/strict');
const { describe, it, before, after } = require('node:test');
const { startRunner } = require('./helpers');

describe('supervisor', () => {
  let runner;
  before(async () => {
    runner = await startRunner({ env: { FNHOOK_RUNNER_HEAP_MB: '48' } });
    assert.equal((await runner.assign('acme')).status, 200);
    const fns = {
      // Never settles, but leaves the event loop free.
      hang: 'module.exports = () => new Promise(() => {});',
      'hang-http': 'module.exports = (ctx, req, res) => { res.write("partial"); };',
      loop: 'module.exports = async (ctx) => { if (ctx.query.spin) for (;;) {} return { body: "loop ok" }; };',
      hog: `module.exports = async (ctx) => {
        if (!ctx.query.boom) return { body: 'hog ok' };
        const keep = [];
        for (;;) keep.push({ n: keep.length, s: 'x'.repeat(64) + keep.length });
      };`,
      quit: 'module.exports = async (ctx) => { if (ctx.query.exit) process.exit(3); return "quit ok"; };',
      other: 'export default async () => ({ body: { other: "ok" } });',
      slow: 'module.exports = async (ctx) => { await new Promise((r) => setTimeout(r, Number(ctx.query.ms))); return "slow done"; };',
    };
    for (const [name, code] of Object.entries(fns)) {
      const res = await runner.load(name, { code, timeoutMs: 400 });
      assert.equal(res.status, 200, `${name}: ${res.text}`);
    }
    assert.equal((await runner.load('slow', { version: 2, code: fns.slow, timeoutMs: 3000 })).status, 200);
  });
  after(() => runner.stop());

  /** Lines of the runner's own log saying the runtime was restarted. */
  const restarts = async () =>
    (await runner.stream('limit=1000')).lines.filter((line) => line.source === 'runner' && line.msg === 'runtime exited; restarting').length;

  it('answers 504 at the timeout and keeps a runtime that is merely waiting', async () => {
    const before = await restarts();
    const started = Date.now();
    const res = await runner.run('hang');
    const took = Date.now() - started;
    assert.equal(res.status, 504);
    assert.equal(res.json.error.code, 'timeout');
    assert.equal(res.headers['x-fnhook-version'], '1');
    assert.ok(took >= 390 && took < 1500, `answered after ${took} ms`);
    assert.equal((await runner.run('other')).status, 200);
    assert.equal(await restarts(), before, 'an idle event loop answers the ping: no restart');
  });

  it('cuts a form 3 response that never ends at the timeout', async () => {
    const res = await runner.run('hang-http').catch((err) => err);
    // Headers and a first chunk went out already, so the runner can only cut the stream.
    assert.ok(res instanceof Error || res.status === 504, `got ${res.status}`);
    assert.equal((await runner.run('other')).status, 200);
  });

  it('kills a synchronous loop at the timeout; the next call works soon after', async (t) => {
    const before = await restarts();
    const started = Date.now();
    const spun = await runner.run('loop', '?spin=1');
    assert.equal(spun.status, 504);
    const next = await runner.run('other');
    const took = Date.now() - started;
    assert.equal(next.status, 200, next.text);
    assert.deepEqual(next.json, { other: 'ok' });
    t.diagnostic(`the next call answered ${took} ms after the looping call started (timeout 400 ms)`);
    // Timeout + kill + respawn + reload is about timeout + 0.5 s; the bound leaves room for a
    // loaded test machine (starting node alone can take a second there).
    assert.ok(took < 400 + 2500, `other answered ${took} ms after the looping call started`);
    assert.equal(await restarts(), before + 1);

    const again = await runner.run('loop');
    assert.equal(again.status, 200);
    assert.equal(again.text, 'loop ok');
    const lines = await runner.logs('loop');
    assert.match(lines.at(-1).msg, /runtime restarted.*timed out/);
  });

  it('survives a memory blow-up: 502, then the next call works', async () => {
    const blown = await runner.run('hog', '?boom=1');
    assert.ok([502, 504].includes(blown.status), `got ${blown.status}`);
    assert.ok(['function_crashed', 'timeout'].includes(blown.json.error.code));
    assert.doesNotMatch(blown.text, /heap|FATAL|at /);
    const next = await runner.run('hog');
    assert.equal(next.status, 200, next.text);
    assert.equal(next.text, 'hog ok');
    assert.equal((await runner.run('other')).status, 200);
    const state = await runner.call('GET', '/_fnhook/state');
    assert.equal(state.json.functions.hog, 1, 'every function was reloaded');
    assert.equal(state.json.functions.slow, 2);
  });

  it('survives process.exit() in tenant code', async () => {
    const exited = await runner.run('quit', '?exit=1');
    assert.equal(exited.status, 502);
    assert.equal(exited.json.error.code, 'function_crashed');
    const next = await runner.run('quit');
    assert.equal(next.status, 200);
    assert.equal(next.text, 'quit ok');
    assert.match((await runner.logs('quit')).at(-1).msg, /runtime restarted: the runtime exited with code 3/);
  });

  it('logs a stray throw in a timer and an unhandled rejection without restarting', async () => {
    const load = await runner.load('stray', {
      code: `module.exports = async () => {
        setTimeout(() => { throw new Error('stray boom'); }, 1);
        Promise.reject(new Error('nobody catches'));
        return 'stray ok';
      };`,
    });
    assert.equal(load.status, 200);
    const before = await restarts();
    assert.equal((await runner.run('stray')).text, 'stray ok');
    let lines = [];
    for (let i = 0; i < 50 && lines.length < 2; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      lines = await runner.logs('stray');
    }
    assert.deepEqual(lines.map((line) => line.msg.split('\n')[0]).sort(), [
      'uncaught exception: Error: stray boom',
      'unhandled rejection: Error: nobody catches',
    ]);
    assert.equal((await runner.run('stray')).status, 200);
    assert.equal(await restarts(), before);
  });

  it('drains calls in flight on SIGTERM, then exits 0', async () => {
    const inflight = runner.run('slow', '?ms=300');
    await new Promise((resolve) => setTimeout(resolve, 50));
    runner.child.kill('SIGTERM');
    const res = await inflight;
    assert.equal(res.status, 200);
    assert.equal(res.text, 'slow done');
    const { code } = await runner.exited;
    assert.equal(code, 0);
  });
});
