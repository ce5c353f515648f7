// The reference servers of `make bench` (bench/README in docs/performance.md):
//   node bench/floor.js          a plain node:http server that runs the benchmark function
//                                the way a runner does (ctx in, {status, headers, body} out)
//   node bench/floor.js --once   runs the function once for a GET / and prints its body:
//                                the "naive cold" reference, one node process per request
// The function's CommonJS source comes from FNHOOK_BENCH_FUNCTION (the bench passes the very
// code it deploys to fnhook); without it, a copy of the default function is used.
// The bench also runs this file inline (`node -e`) in a bridge-mode Nomad job, where Nomad
// interpolates dollar-brace sequences in arguments: this file must not contain one.
'use strict';
const http = require('node:http');
const { randomUUID } = require('node:crypto');

const DEFAULT_FUNCTION = 'module.exports = async (ctx) => ({ body: { ok: true, path: ctx.path } });';

function compile(source) {
  const mod = { exports: {} };
  new Function('module', 'exports', 'require', source)(mod, mod.exports, require);
  if (typeof mod.exports !== 'function') throw new Error('the function source exports no function');
  return mod.exports;
}

function makeCtx(req, url, rawBody) {
  const query = {};
  for (const [k, v] of url.searchParams) {
    if (k in query) query[k] = [].concat(query[k], v);
    else query[k] = v;
  }
  let body;
  const type = String(req.headers['content-type'] || '');
  if (rawBody.length > 0) {
    if (/[/+]json\b/.test(type)) body = JSON.parse(rawBody.toString('utf8'));
    else if (type.startsWith('application/x-www-form-urlencoded')) body = Object.fromEntries(new URLSearchParams(rawBody.toString('utf8')));
    else body = rawBody;
  }
  return {
    method: req.method, path: url.pathname, query, headers: req.headers, rawBody, body,
    configuration: Object.freeze({}), tenant: 'floor', function: 'floor',
    requestId: req.headers['x-fnhook-request-id'] || randomUUID(),
  };
}

function send(res, result) {
  const r = result !== null && typeof result === 'object' && !Array.isArray(result) && !Buffer.isBuffer(result)
    ? result : { body: result };
  const headers = Object.assign({}, r.headers);
  let payload = r.body;
  const hasType = Object.keys(headers).some((h) => h.toLowerCase() === 'content-type');
  if (payload === undefined) payload = '';
  else if (typeof payload === 'string') { if (!hasType) headers['content-type'] = 'text/plain; charset=utf-8'; }
  else if (Buffer.isBuffer(payload)) { if (!hasType) headers['content-type'] = 'application/octet-stream'; }
  else { payload = JSON.stringify(payload); if (!hasType) headers['content-type'] = 'application/json'; }
  headers['content-length'] = Buffer.byteLength(payload);
  res.writeHead(r.status || 200, headers);
  res.end(payload);
}

function serve(fn, host, port) {
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      try {
        const url = new URL(req.url, 'http://floor');
        send(res, await fn(makeCtx(req, url, Buffer.concat(chunks))));
      } catch (err) {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end('{"error":{"code":"function_error","message":"the function failed"}}');
      }
    });
  });
  server.keepAliveTimeout = 65000;
  server.listen(port, host, () => {
    process.stdout.write(JSON.stringify({ msg: 'listening', port: server.address().port }) + '\n');
  });
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
  process.on('SIGINT', () => server.close(() => process.exit(0)));
}

async function once(fn) {
  const req = { method: 'GET', url: '/', headers: {} };
  const result = await fn(makeCtx(req, new URL('/', 'http://floor'), Buffer.alloc(0)));
  const body = result && typeof result === 'object' && 'body' in result ? result.body : result;
  process.stdout.write(typeof body === 'string' ? body : JSON.stringify(body));
}

const fn = compile(process.env.FNHOOK_BENCH_FUNCTION || DEFAULT_FUNCTION);
if (process.argv.includes('--once')) {
  once(fn).catch((err) => { process.stderr.write(String(err && err.stack) + '\n'); process.exit(1); });
} else {
  serve(fn, process.env.FNHOOK_BENCH_HOST || '127.0.0.1', Number(process.env.FNHOOK_BENCH_PORT || 8090));
}
