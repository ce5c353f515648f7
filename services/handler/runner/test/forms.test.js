'use strict';
// The tenants' contract (SPEC section 5): the three function forms, CommonJS and ES modules,
// ctx, bodies, results, errors, the environment and console capture.

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { describe, it, before, after } = require('node:test');
const { startRunner, waitFor } = require('./helpers');

describe('function programming model', () => {
  let runner;
  before(async () => {
    runner = await startRunner();
    assert.equal((await runner.assign('acme')).status, 200);
  });
  after(() => runner.stop());

  /** Loads `code` as function `name` and fails the test if that does not work. */
  async function load(name, code, extra = {}) {
    const res = await runner.load(name, { code, ...extra });
    assert.equal(res.status, 200, `load ${name}: ${res.text}`);
  }

  it('form 1 (CommonJS): ctx carries method, path, query, headers, configuration and ids', async () => {
    await load(
      'ctx-cjs',
      `module.exports = async (ctx) => ({
        status: 201,
        headers: { 'x-a': 'b' },
        body: {
          method: ctx.method, path: ctx.path, query: ctx.query, tenant: ctx.tenant,
          function: ctx.function, requestId: ctx.requestId, configuration: ctx.configuration,
          custom: ctx.headers['x-custom'], auth: ctx.headers.authorization ?? null,
          internal: Object.keys(ctx.headers).filter((h) => h.startsWith('x-fnhook-') && h !== 'x-fnhook-request-id'),
        },
      });`,
      { configuration: { API_KEY: 'k-123' } },
    );
    const res = await runner.run('ctx-cjs', '/orders/7?x=1&tag=a&tag=b&empty=', {
      method: 'PATCH',
      headers: {
        'x-custom': 'yes',
        'x-fnhook-request-id': 'req-42',
        'x-fnhook-min-version': '1',
        // The gateway moves the sender's Authorization here; the runner token takes its place.
        'x-fnhook-authorization': 'Bearer sender-secret',
      },
    });
    assert.equal(res.status, 201);
    assert.equal(res.headers['x-a'], 'b');
    assert.equal(res.headers['x-fnhook-version'], '1');
    assert.deepEqual(res.json, {
      method: 'PATCH',
      path: '/orders/7',
      query: { x: '1', tag: ['a', 'b'], empty: '' },
      tenant: 'acme',
      function: 'ctx-cjs',
      requestId: 'req-42',
      configuration: { API_KEY: 'k-123' },
      custom: 'yes',
      auth: 'Bearer sender-secret',
      internal: [],
    });
    assert.equal(res.headers['x-fnhook-error'], undefined, 'a function answer is not marked as a runner error');

    const bare = await runner.run('ctx-cjs');
    assert.equal(bare.json.auth, null, 'the runner token is not passed on');
    assert.equal(bare.json.path, '/');
    assert.deepEqual(bare.json.query, {});
    assert.match(bare.json.requestId, /^[0-9a-f-]{36}$/, 'a request id is generated when none is given');
  });

  it('form 1 (ES module): export default, with the same ctx', async () => {
    await load('ctx-esm', 'export default async function (ctx) {\n  return { body: { path: ctx.path, q: ctx.query.q } };\n}\n');
    const res = await runner.run('ctx-esm', '/a/b?q=%C3%A9t%C3%A9');
    assert.equal(res.status, 200);
    assert.deepEqual(res.json, { path: '/a/b', q: 'été' });
  });

  it('form 1: strings, Buffers, undefined and JSON results', async () => {
    await load(
      'shapes',
      `module.exports = async (ctx) => {
        switch (ctx.path) {
          case '/string': return { body: 'héllo' };
          case '/buffer': return { body: Buffer.from([1, 2, 3]) };
          case '/typed': return { headers: { 'content-type': 'text/csv' }, body: 'a,b' };
          case '/undefined': return undefined;
          case '/array': return [1, 2];
          case '/bare-string': return 'plain';
          case '/empty-status': return { status: 204 };
          case '/bad-status': return { status: 42 };
          case '/bad-header': return { headers: { 'bad header': 'x' } };
          case '/own-404': return { status: 404, headers: { 'x-fnhook-error': 'function_not_loaded' }, body: { error: 'mine' } };
          default: return { body: { ok: true } };
        }
      };`,
    );
    const string = await runner.run('shapes', '/string');
    assert.equal(string.status, 200);
    assert.equal(string.text, 'héllo');
    assert.match(string.headers['content-type'], /^text\/plain/);
    const buffer = await runner.run('shapes', '/buffer');
    assert.deepEqual([...buffer.raw], [1, 2, 3]);
    assert.equal(buffer.headers['content-type'], 'application/octet-stream');
    const typed = await runner.run('shapes', '/typed');
    assert.equal(typed.headers['content-type'], 'text/csv');
    assert.equal(typed.text, 'a,b');
    const none = await runner.run('shapes', '/undefined');
    assert.equal(none.status, 200);
    assert.equal(none.text, '');
    assert.deepEqual((await runner.run('shapes', '/array')).json, [1, 2]);
    assert.equal((await runner.run('shapes', '/bare-string')).text, 'plain');
    assert.equal((await runner.run('shapes', '/empty-status')).status, 204);
    const json = await runner.run('shapes', '/json');
    assert.equal(json.headers['content-type'], 'application/json');
    assert.deepEqual(json.json, { ok: true });
    const own = await runner.run('shapes', '/own-404');
    assert.equal(own.status, 404);
    assert.deepEqual(own.json, { error: 'mine' });
    assert.equal(own.headers['x-fnhook-error'], undefined, 'functions cannot pose as the runner');
    for (const path of ['/bad-status', '/bad-header']) {
      const bad = await runner.run('shapes', path);
      assert.equal(bad.status, 500, path);
      assert.equal(bad.json.error.code, 'invalid_result');
      assert.equal(bad.headers['x-fnhook-error'], 'invalid_result');
    }
  });

  it('form 1: a thrown error or rejection gives a safe 500 and the stack goes to the logs', async () => {
    await load(
      'fails',
      `module.exports = async (ctx) => {
        if (ctx.query.sync) throw new Error('secret detail ' + ctx.configuration.TOKEN);
        await new Promise((r) => setTimeout(r, 1));
        throw new TypeError('async secret');
      };`,
      { configuration: { TOKEN: 'hunter2' } },
    );
    for (const query of ['?sync=1', '']) {
      const res = await runner.run('fails', query);
      assert.equal(res.status, 500);
      assert.deepEqual(res.json, { error: { code: 'function_error', message: 'the function failed' } });
      assert.doesNotMatch(res.text, /secret|hunter2|at /);
    }
    const lines = await runner.logs('fails');
    assert.equal(lines.length, 2);
    assert.ok(lines.every((line) => line.level === 'error'));
    assert.match(lines[0].msg, /Error: secret detail hunter2\n\s+at /);
    assert.match(lines[1].msg, /TypeError: async secret/);
  });

  it('form 2 (callback): cb(null, result) and cb(err)', async () => {
    await load(
      'callback',
      `module.exports = (ctx, cb) => {
        if (ctx.query.fail) return setTimeout(() => cb(new Error('nope')), 1);
        setTimeout(() => cb(null, { body: 'hi ' + ctx.method }), 1);
      };`,
    );
    const ok = await runner.run('callback', '', { method: 'POST', body: 'x' });
    assert.equal(ok.status, 200);
    assert.equal(ok.text, 'hi POST');
    const failed = await runner.run('callback', '?fail=1');
    assert.equal(failed.status, 500);
    assert.equal(failed.json.error.code, 'function_error');
  });

  it('form 2 in an ES module', async () => {
    await load('callback-esm', 'export default function (ctx, cb) { cb(null, { status: 202, body: { p: ctx.path } }); }');
    const res = await runner.run('callback-esm', '/x');
    assert.equal(res.status, 202);
    assert.deepEqual(res.json, { p: '/x' });
  });

  it('form 3: an Express-like app routes on req.url, reads the query and parses its own body', async () => {
    // A tiny router in the style of Express, written by hand: it sees Node's own req and res.
    await load(
      'app',
      `const orders = new Map([['7', { id: '7', item: 'tea' }]]);
      function app(req, res) {
        const url = new URL(req.url, 'http://x');
        const send = (status, value) => {
          res.statusCode = status;
          res.setHeader('content-type', 'application/json');
          res.end(JSON.stringify(value));
        };
        let m;
        if (req.method === 'GET' && (m = /^\\/orders\\/(\\w+)$/.exec(url.pathname))) {
          const order = orders.get(m[1]);
          return order ? send(200, { ...order, verbose: url.searchParams.get('verbose'), url: req.url }) : send(404, { error: 'no order' });
        }
        if (req.method === 'POST' && url.pathname === '/orders') {
          let raw = '';
          req.setEncoding('utf8');
          req.on('data', (chunk) => (raw += chunk));
          req.on('end', () => {
            const order = JSON.parse(raw);
            orders.set(order.id, order);
            send(201, { created: order, contentType: req.headers['content-type'] });
          });
          return;
        }
        send(404, { error: 'no route', url: req.url });
      }
      module.exports = (ctx, req, res) => app(req, res);`,
    );
    const got = await runner.run('app', '/orders/7?verbose=yes');
    assert.equal(got.status, 200);
    assert.deepEqual(got.json, { id: '7', item: 'tea', verbose: 'yes', url: '/orders/7?verbose=yes' });
    assert.equal(got.headers['x-fnhook-version'], '1');

    const created = await runner.run('app', '/orders', { method: 'POST', body: { id: '9', item: 'cake' } });
    assert.equal(created.status, 201);
    assert.deepEqual(created.json, { created: { id: '9', item: 'cake' }, contentType: 'application/json' });
    const chunked = await runner.run('app', '/orders', { method: 'POST', body: { id: '10', item: 'pie' }, chunked: true });
    assert.equal(chunked.status, 201);
    assert.equal((await runner.run('app', '/orders/9')).json.item, 'cake');

    const root = await runner.run('app');
    assert.equal(root.status, 404);
    assert.equal(root.json.url, '/', 'req.url is "/" when no path follows the function name');
  });

  it('form 3 in an ES module, and a form 3 handler that throws', async () => {
    await load(
      'raw-esm',
      `export default (ctx, req, res) => {
        if (req.url === '/throw') throw new Error('boom');
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(req.method + ' ' + req.url);
      };`,
    );
    assert.equal((await runner.run('raw-esm', '/p?q=1', { method: 'DELETE' })).text, 'DELETE /p?q=1');
    const thrown = await runner.run('raw-esm', '/throw');
    assert.equal(thrown.status, 500);
    assert.equal(thrown.json.error.code, 'function_error');
  });

  it('ctx.rawBody holds the exact bytes: a GitHub x-hub-signature-256 verifies', async () => {
    await load(
      'github',
      `const crypto = require('node:crypto');
      module.exports = async (ctx) => {
        const expected = 'sha256=' + crypto.createHmac('sha256', ctx.configuration.SECRET).update(ctx.rawBody).digest('hex');
        const given = String(ctx.headers['x-hub-signature-256'] || '');
        const valid = given.length === expected.length && crypto.timingSafeEqual(Buffer.from(given), Buffer.from(expected));
        if (!valid) return { status: 401, body: { valid } };
        return { body: { valid, action: ctx.body.action, title: ctx.body.issue.title, bytes: ctx.rawBody.length } };
      };`,
      { configuration: { SECRET: 'It’s a Secret to Everybody' } },
    );
    // Odd whitespace, escapes and non-ASCII text: a re-serialised body would not match.
    const body = '{\n  "action" :"opened",\t"issue": {"title": "Grüße \\u00e9 🚀  ",\r\n "n": 1.50}   }\n';
    const signature = 'sha256=' + crypto.createHmac('sha256', 'It’s a Secret to Everybody').update(body).digest('hex');
    const res = await runner.run('github', '', {
      method: 'POST',
      body,
      headers: { 'content-type': 'application/json', 'x-hub-signature-256': signature },
    });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { valid: true, action: 'opened', title: 'Grüße é 🚀  ', bytes: Buffer.byteLength(body) });

    const tampered = await runner.run('github', '', {
      method: 'POST',
      body: JSON.stringify(JSON.parse(body)),
      headers: { 'content-type': 'application/json', 'x-hub-signature-256': signature },
    });
    assert.equal(tampered.status, 401);
  });

  it('parses form-encoded and JSON bodies, and answers 400 for invalid JSON without calling', async () => {
    await load(
      'bodies',
      `module.exports = async (ctx) => {
        console.log('called');
        return { body: { body: Buffer.isBuffer(ctx.body) ? 'buffer:' + ctx.body.toString() : ctx.body ?? null, raw: ctx.rawBody.toString() } };
      };`,
    );
    const form = await runner.run('bodies', '', {
      method: 'POST',
      body: 'name=J%C3%BCrgen+M&tags=a&tags=b&empty=',
      headers: { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' },
    });
    assert.deepEqual(form.json.body, { name: 'Jürgen M', tags: ['a', 'b'], empty: '' });
    const json = await runner.run('bodies', '', { method: 'POST', body: { a: [1, { b: null }] } });
    assert.deepEqual(json.json.body, { a: [1, { b: null }] });
    const other = await runner.run('bodies', '', { method: 'POST', body: 'plain text', headers: { 'content-type': 'text/plain' } });
    assert.equal(other.json.body, 'buffer:plain text');
    const empty = await runner.run('bodies', '', { method: 'POST', headers: { 'content-type': 'application/json' } });
    assert.equal(empty.json.body, null);

    const before = (await runner.logs('bodies')).length;
    const invalid = await runner.run('bodies', '', {
      method: 'POST',
      body: '{"a":',
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(invalid.status, 400);
    assert.equal(invalid.json.error.code, 'invalid_json');
    assert.equal((await runner.logs('bodies')).length, before, 'the function was not called');
  });

  it('tenant code sees an environment built from nothing', async () => {
    await load('env', 'module.exports = async () => ({ body: { env: process.env, argv: process.argv.slice(2) } });');
    const res = await runner.run('env');
    assert.equal(res.status, 200);
    assert.deepEqual(Object.keys(res.json.env).sort(), ['HOME', 'NODE_ENV', 'TZ']);
    assert.equal(res.json.env.NODE_ENV, 'production');
    assert.equal(res.json.env.TZ, 'UTC');
    assert.ok(!res.text.includes(runner.token), 'the token is nowhere in what tenant code sees');
    assert.doesNotMatch(res.text, /FNHOOK_|NOMAD_|do-not-leak/);
  });

  it('captures console output per function, even for concurrent async calls', async () => {
    const code = (tag) => `module.exports = async (ctx) => {
      console.log('${tag} start', ctx.query.i);
      await new Promise((r) => setTimeout(r, 5 + Number(ctx.query.i) % 3));
      console.warn('${tag} middle', ctx.query.i);
      setImmediate(() => console.error('${tag} later', ctx.query.i));
      return { body: 'ok' };
    };`;
    await load('log-a', code('A'));
    await load('log-b', code('B'));
    const calls = [];
    for (let i = 0; i < 10; i++) {
      calls.push(runner.run('log-a', `?i=${i}`), runner.run('log-b', `?i=${i}`));
    }
    for (const res of await Promise.all(calls)) assert.equal(res.status, 200);
    await waitFor(async () => (await runner.logs('log-b')).length === 30, 3000, 'all log lines');
    for (const [name, tag] of [['log-a', 'A'], ['log-b', 'B']]) {
      const lines = await runner.logs(name);
      assert.equal(lines.length, 30);
      assert.ok(lines.every((line) => line.msg.startsWith(`${tag} `)), `${name} holds only its own lines`);
      assert.deepEqual([...new Set(lines.map((line) => line.level))].sort(), ['error', 'log', 'warn']);
      assert.ok(lines.every((line) => !Number.isNaN(Date.parse(line.ts))));
    }
    // The stream gets the lines through a pipe from the child: a moment after its ring buffers.
    let streamed = [];
    await waitFor(async () => {
      streamed = (await runner.stream('limit=1000')).lines.filter((line) => line.fn === 'log-a' && line.source === 'function');
      return streamed.length >= 30;
    }, 3000, 'the lines in the log stream');
    assert.equal(streamed.length, 30, 'each line is also in the runner log stream');
    assert.ok(streamed.every((line) => line.msg.startsWith('A ') && line.level && line.ts && line.version === 1));
    assert.equal(new Set(streamed.map((line) => line.requestId)).size, 10, 'one request id per call');
    assert.ok(!runner.lines.some((line) => line.fn), 'tenant lines do not go to the runner stdout');
  });

  it('keeps the last 200 lines per function, each cut to 4 KiB', async () => {
    await load(
      'chatty',
      `module.exports = async () => {
        for (let i = 0; i < 250; i++) console.log('line', i);
        console.info('é'.repeat(5000));
        return 'done';
      };`,
    );
    assert.equal((await runner.run('chatty')).status, 200);
    const lines = await runner.logs('chatty');
    assert.equal(lines.length, 200);
    assert.equal(lines[0].msg, 'line 51');
    const long = lines[199];
    assert.equal(long.level, 'info');
    assert.ok(Buffer.byteLength(long.msg) <= 4096 + ' [truncated]'.length);
    assert.match(long.msg, /^é+.* \[truncated\]$/);
  });
});
