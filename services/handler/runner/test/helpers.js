'use strict';
// Test helpers: start a real runner (main.js in its own process) and talk HTTP to it.
// (node --test also runs this file as a test file; it defines no tests.)

const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const assert = require('node:assert/strict');

const MAIN = path.join(__dirname, '..', 'main.js');

/** A fresh temporary directory, removed by the caller. */
function tempDir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/**
 * One HTTP request. `body` may be a string, Buffer or object (sent as JSON); `chunked` sends
 * it without content-length. Resolves {status, headers, text, json}. With `agent` (keep-alive,
 * like the gateway's and the handler's clients) the runner may answer before the whole body is
 * sent, and still reads the rest; a one-off connection asks for "Connection: close", and a
 * server closing with unread data resets it.
 */
function request(port, method, urlPath, { headers = {}, body, chunked = false, agent = false } = {}) {
  return new Promise((resolve, reject) => {
    let payload;
    const all = { ...headers };
    if (body !== undefined) {
      if (typeof body === 'string' || Buffer.isBuffer(body)) payload = Buffer.from(body);
      else {
        payload = Buffer.from(JSON.stringify(body));
        if (!Object.keys(all).some((k) => k.toLowerCase() === 'content-type')) all['content-type'] = 'application/json';
      }
      if (!chunked) all['content-length'] = payload.length;
    }
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, headers: all, agent }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => {
        const raw = Buffer.concat(chunks);
        const text = raw.toString('utf8');
        let json;
        if (/json/.test(res.headers['content-type'] || '')) {
          try {
            json = JSON.parse(text);
          } catch {}
        }
        resolve({ status: res.statusCode, headers: res.headers, raw, text, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (payload && chunked) {
      // Two writes, so the body really goes out in chunks.
      req.write(payload.subarray(0, payload.length >> 1));
      req.end(payload.subarray(payload.length >> 1));
    } else {
      req.end(payload);
    }
  });
}

/**
 * Starts a runner on a random port with a temporary workdir. `env` adds or overrides
 * variables; `modulesDir` is the module cache (an empty temporary one by default).
 * The runner's environment also holds NOMAD_* and other host variables, which tenant code
 * must never see. Returns a handle; call stop() when done.
 */
async function startRunner({ env = {}, modulesDir } = {}) {
  const root = tempDir('fnhook-runner-');
  const token = crypto.randomBytes(24).toString('base64url');
  const modules = modulesDir || path.join(root, 'modules');
  fs.mkdirSync(modules, { recursive: true });
  const child = spawn(process.execPath, [MAIN], {
    env: {
      PATH: process.env.PATH,
      FNHOOK_RUNNER_TOKEN: token,
      FNHOOK_RUNNER_PORT: '0',
      FNHOOK_RUNNER_HOST: '127.0.0.1',
      FNHOOK_RUNNER_WORKDIR: path.join(root, 'work'),
      FNHOOK_RUNNER_MODULES: modules,
      NOMAD_ALLOC_ID: 'alloc-1234',
      NOMAD_TASK_DIR: path.join(root, 'task'),
      HOST_SECRET: 'do-not-leak',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines = []; // the runner's stdout: its "listening" line, nothing else

  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const port = await new Promise((resolve, reject) => {
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      let parsed;
      try {
        parsed = JSON.parse(line);
      } catch {
        parsed = { raw: line };
      }
      lines.push(parsed);
      if (parsed.msg === 'listening') resolve(parsed.port);
    });
    exited.then(({ code }) => reject(new Error(`runner exited with ${code}: ${stderr}`)));
  });

  const auth = { authorization: `Bearer ${token}` };
  const agent = new http.Agent({ keepAlive: true });
  const runner = {
    port,
    token,
    root,
    modules,
    workDir: path.join(root, 'work'),
    lines,
    child,
    exited,
    get stderr() {
      return stderr;
    },
    /** A request with the runner token (override with headers.authorization). */
    call(method, urlPath, options = {}) {
      return request(port, method, urlPath, { agent, ...options, headers: { ...auth, ...options.headers } });
    },
    /** A request without the token. */
    anonymous(method, urlPath, options) {
      return request(port, method, urlPath, { agent, ...options });
    },
    assign(tenant = 'acme') {
      return runner.call('POST', '/_fnhook/assign', { body: { tenant } });
    },
    /** Loads a function; `spec` is {version, code, ...}. */
    load(name, spec) {
      return runner.call('PUT', `/_fnhook/functions/${name}`, { body: { version: 1, ...spec } });
    },
    run(name, rest = '', options = {}) {
      return runner.call(options.method || 'GET', `/_fnhook/run/${name}${rest}`, options);
    },
    async logs(name) {
      const res = await runner.call('GET', `/_fnhook/logs/${name}`);
      return res.json.lines;
    },
    /** Reads the log stream: {lines, next, missed, dropped}; `query` e.g. "after=3&wait=1". */
    async stream(query = '') {
      const res = await runner.call('GET', `/_fnhook/logs?${query}`);
      assert.equal(res.status, 200, res.text);
      return res.json;
    },
    /** SIGTERMs the runner, waits for it, and removes its files. */
    async stop() {
      agent.destroy();
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 8000);
        await exited;
        clearTimeout(timer);
      }
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
  return runner;
}

/** Waits until `predicate()` is true, polling; fails after `ms`. */
async function waitFor(predicate, ms = 3000, what = 'condition') {
  const until = Date.now() + ms;
  while (!(await predicate())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

module.exports = { startRunner, request, tempDir, waitFor, MAIN };
