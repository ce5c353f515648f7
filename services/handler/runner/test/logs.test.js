'use strict';
// The log stream through a real runner: GET /_fnhook/logs?after=<seq>&wait=<s> carries what
// tenant code logs (with function, version and request id), the runner's own lines (timeouts,
// restarts), raw stdout and stderr, under the runner token; the runner's stdout stays quiet.

const assert = require('node:assert/strict');
const { describe, it, before, after } = require('node:test');
const { startRunner, waitFor } = require('./helpers');

describe('log stream', () => {
  let runner;
  before(async () => {
    runner = await startRunner({ env: { FNHOOK_RUNNER_LOG_LINES: '100' } });
    assert.equal((await runner.assign('acme')).status, 200);
    const fns = {
      hello: `module.exports = async (ctx) => {
        console.log('hello', ctx.query.who);
        console.warn('careful');
        return 'hi';
      };`,
      raw: `module.exports = async () => {
        process.stdout.write('raw out\\n');
        process.stderr.write('raw err\\n');
        return 'raw';
      };`,
      stray: `module.exports = async () => {
        setTimeout(() => { throw new Error('stray boom'); }, 1);
        return 'stray';
      };`,
      hang: 'module.exports = () => new Promise(() => {});',
      flood: `module.exports = async (ctx) => {
        for (let i = 0; i < Number(ctx.query.n); i++) console.log('flood', i);
        return 'flooded';
      };`,
    };
    for (const [name, code] of Object.entries(fns)) {
      const res = await runner.load(name, { version: name === 'hello' ? 3 : 1, code, timeoutMs: name === 'hang' ? 300 : 5000 });
      assert.equal(res.status, 200, `${name}: ${res.text}`);
    }
  });
  after(() => runner.stop());

  /** Waits until the stream after `cursor` holds a line matching `match`; returns the read. */
  async function until(cursor, match) {
    let got;
    await waitFor(async () => {
      got = await runner.stream(`after=${cursor}&limit=1000`);
      return got.lines.some(match);
    }, 3000, 'a line in the log stream');
    return got;
  }

  it('needs the runner token', async () => {
    const res = await runner.anonymous('GET', '/_fnhook/logs?after=0');
    assert.equal(res.status, 401);
    assert.equal(res.json.error.code, 'unauthorized');
    const wrong = await runner.call('GET', '/_fnhook/logs', { headers: { authorization: 'Bearer nope' } });
    assert.equal(wrong.status, 401);
    assert.equal((await runner.call('POST', '/_fnhook/logs')).status, 405);
  });

  it('carries console lines with function, version, request id and level, in order', async () => {
    const start = (await runner.stream()).next;
    const res = await runner.run('hello', '?who=ann', { headers: { 'x-fnhook-request-id': 'req-1' } });
    assert.equal(res.status, 200);
    const got = await until(start, (l) => l.msg === 'careful');
    const mine = got.lines.filter((l) => l.requestId === 'req-1');
    assert.deepEqual(
      mine.map((l) => [l.source, l.level, l.fn, l.version, l.msg]),
      [
        ['function', 'log', 'hello', 3, 'hello ann'],
        ['function', 'warn', 'hello', 3, 'careful'],
      ],
    );
    assert.ok(mine[0].seq < mine[1].seq);
    assert.ok(!Number.isNaN(Date.parse(mine[0].ts)));
    // The cursor: a read after `next` holds only newer lines.
    await runner.run('hello', '?who=bob', { headers: { 'x-fnhook-request-id': 'req-2' } });
    const newer = await until(got.next, (l) => l.requestId === 'req-2' && l.level === 'warn');
    assert.ok(newer.lines.every((l) => l.seq > got.next && l.requestId !== 'req-1'));
    assert.equal(newer.missed, 0);
    assert.ok(!runner.lines.some((line) => line.fn || line.source), 'nothing but "listening" on stdout');
  });

  it('long-polls: an empty read waits for the next line and answers as soon as it comes', async () => {
    const { next } = await runner.stream();
    const started = Date.now();
    const empty = await runner.stream(`after=${next}&wait=0.3`);
    assert.deepEqual(empty.lines, []);
    assert.equal(empty.next, next);
    assert.ok(Date.now() - started >= 280, 'waited out its time');

    const polling = runner.stream(`after=${next}&wait=10`);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const called = Date.now();
    await runner.run('hello', '?who=eve');
    const woke = await polling;
    assert.ok(Date.now() - called < 2000, `answered ${Date.now() - called} ms after the call`);
    assert.ok(woke.lines.length >= 1);
    assert.ok(woke.lines.every((l) => l.seq > next));
  });

  it('carries timeouts, uncaught errors, and raw stdout and stderr', async () => {
    const { next } = await runner.stream();
    assert.equal((await runner.run('hang', '', { headers: { 'x-fnhook-request-id': 'slow-1' } })).status, 504);
    const timedOut = await until(next, (l) => l.source === 'runner' && /timed out after 300 ms/.test(l.msg));
    const line = timedOut.lines.find((l) => /timed out/.test(l.msg));
    assert.deepEqual([line.level, line.fn, line.version, line.requestId], ['error', 'hang', 1, 'slow-1']);

    await runner.run('stray');
    const stray = await until(next, (l) => /^uncaught exception: Error: stray boom/.test(l.msg));
    assert.equal(stray.lines.find((l) => /stray boom/.test(l.msg)).fn, 'stray');

    await runner.run('raw');
    const raw = await until(next, (l) => l.source === 'stderr' && l.msg === 'raw err');
    assert.ok(raw.lines.some((l) => l.source === 'stdout' && l.msg === 'raw out'));
  });

  it('drops the oldest lines beyond its bound and says how many a reader missed', async () => {
    const { next } = await runner.stream();
    assert.equal((await runner.run('flood', '?n=300')).status, 200);
    const got = await until(next, (l) => l.msg === 'flood 299');
    assert.equal(got.lines.length, 100, 'FNHOOK_RUNNER_LOG_LINES bounds the stream');
    assert.equal(got.lines[0].seq, got.next - 99);
    assert.equal(got.missed, got.next - next - 100);
    assert.ok(got.missed >= 200);
  });

  it('refuses a bad query and a cursor from the future', async () => {
    for (const query of ['after=-1', 'after=x', 'wait=99', 'limit=0', 'limit=5000']) {
      const res = await runner.call('GET', `/_fnhook/logs?${query}`);
      assert.equal(res.status, 400, query);
      assert.equal(res.json.error.code, 'invalid_query');
    }
    const res = await runner.call('GET', '/_fnhook/logs?after=99999999');
    assert.equal(res.status, 400);
    assert.equal(res.json.error.code, 'invalid_cursor');
  });

  it('answers a pending long poll at once on SIGTERM', async () => {
    const { next } = await runner.stream();
    const polling = runner.stream(`after=${next}&wait=20`);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const started = Date.now();
    runner.child.kill('SIGTERM');
    const answer = await polling;
    assert.ok(Date.now() - started < 2000);
    assert.ok(answer.lines.every((l) => l.seq > next));
    assert.equal((await runner.exited).code, 0);
  });
});
