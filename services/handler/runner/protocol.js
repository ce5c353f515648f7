'use strict';
// The runner protocol (SPEC section 7), served by the parent process. It holds the runner's
// state (its one tenant, the loaded function versions), writes function code through loader.js,
// and forwards calls to the host child through supervisor.js. It never runs tenant code.
//
//   GET    /healthz                      {"state":"idle"|"assigned"}            (no token)
//   POST   /_fnhook/assign               {"tenant"} -> 200 once, 409 after
//   GET    /_fnhook/state                {"tenant", "functions": {name: version}}
//   PUT    /_fnhook/functions/{name}     load {version, code, dependencies, configuration, timeoutMs}
//   DELETE /_fnhook/functions/{name}     unload
//   ANY    /_fnhook/run/{name}[/...]     invoke
//   GET    /_fnhook/logs/{name}          {"lines": [{ts, level, msg}]}

const crypto = require('node:crypto');
const http = require('node:http');
const { performance } = require('node:perf_hooks');
const loader = require('./loader');
const { ChildGoneError, ControlTimeout } = require('./supervisor');
const { HttpError, sendJson, sendError, sendHttpError, readJson } = require('./jsonhttp');

/** Tenant and function names. */
const NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;
/** Largest body of a protocol request other than run (code is at most about 1 MiB). */
const CONTROL_BODY_LIMIT = 2 * 1024 * 1024;
/** How long a load may run in the child (module top level included). */
const LOAD_TIMEOUT_MS = 10000;
/** How long a load, unload or logs request waits for a restarting runtime. */
const READY_WAIT_MS = 10000;
/** Default and largest per-call timeout. */
const DEFAULT_TIMEOUT_MS = 10000;
const MAX_TIMEOUT_MS = 2 ** 31 - 1; // setTimeout's limit
/** How long an old version's folder outlives its replacement, beyond its own timeout. */
const OLD_VERSION_GRACE_MS = 1000;

const RUN_PREFIX = '/_fnhook/run/';
const FUNCTIONS_PREFIX = '/_fnhook/functions/';
const LOGS_PREFIX = '/_fnhook/logs/';

// Request headers that stay between the caller and the runner. transfer-encoding is kept so
// that a chunked body is framed the same way to the child.
const DROP_REQUEST = new Set(['authorization', 'connection', 'keep-alive', 'proxy-connection', 'upgrade', 'te', 'trailer', 'expect']);
// Response headers the parent frames itself.
const DROP_RESPONSE = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'trailer']);

/** The caller's raw headers minus the token, hop-by-hop and internal x-fnhook-* ones. */
function forwardHeaders(raw) {
  const out = [];
  for (let i = 0; i < raw.length; i += 2) {
    const lower = raw[i].toLowerCase();
    if (DROP_REQUEST.has(lower)) continue;
    if (lower.startsWith('x-fnhook-') && lower !== 'x-fnhook-request-id') continue;
    out.push(raw[i], raw[i + 1]);
  }
  return out;
}

/** The child's raw response headers minus hop-by-hop ones, with x-fnhook-version ensured. */
function responseHeaders(raw, version) {
  const out = [];
  let versioned = false;
  for (let i = 0; i < raw.length; i += 2) {
    const lower = raw[i].toLowerCase();
    if (DROP_RESPONSE.has(lower)) continue;
    if (lower === 'x-fnhook-version') versioned = true;
    out.push(raw[i], raw[i + 1]);
  }
  if (!versioned) out.push('x-fnhook-version', String(version));
  return out;
}

/** sha256 digest of a string, to compare secrets of any length in constant time. */
function digest(text) {
  return crypto.createHash('sha256').update(text).digest();
}

/**
 * Checks a load body and returns it normalised:
 * {version, code, dependencies, configuration, timeoutMs}. Throws HttpError 400.
 */
function validateSpec(body) {
  const { version, code, dependencies = {}, configuration = {}, timeoutMs = DEFAULT_TIMEOUT_MS } = body;
  const invalid = (message) => new HttpError(400, 'invalid_function', message);
  if (!Number.isSafeInteger(version) || version < 1) throw invalid('version must be a positive integer');
  if (typeof code !== 'string') throw invalid('code must be a string');
  if (!dependencies || typeof dependencies !== 'object' || Array.isArray(dependencies)) {
    throw invalid('dependencies must be an object of name to exact version');
  }
  if (!configuration || typeof configuration !== 'object' || Array.isArray(configuration)) {
    throw invalid('configuration must be an object');
  }
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > MAX_TIMEOUT_MS) {
    throw invalid(`timeoutMs must be an integer from 1 to ${MAX_TIMEOUT_MS}`);
  }
  return { version, code, dependencies, configuration, timeoutMs };
}

/**
 * A loaded function as the parent knows it: enough to forward calls and to reload it into a
 * restarted child (the code itself stays on disk, in `file`).
 * @typedef {{name: string, version: number, timeoutMs: number, file: string,
 *   format: 'cjs'|'esm', configuration: object}} FunctionEntry
 */

/**
 * The protocol server's state and handlers. Create with the runner's token and dependencies;
 * serve with `handle` as an http request listener. Loads and unloads are serialised; calls
 * are not.
 */
class Protocol {
  /**
   * @param {object} options
   * @param {string} options.token          The runner token (Bearer).
   * @param {import('./supervisor').Supervisor} options.supervisor
   * @param {string} options.functionsDir   Where function versions are written.
   * @param {string} options.modulesDir     The read-only module cache.
   * @param {number} options.maxBody        Largest run body, bytes.
   * @param {number} options.maxFunctions   Most functions loaded at once.
   * @param {Function} options.log          log(level, msg, fields).
   */
  constructor({ token, supervisor, functionsDir, modulesDir, maxBody, maxFunctions, log }) {
    this.tokenDigest = digest(token);
    this.supervisor = supervisor;
    this.functionsDir = functionsDir;
    this.modulesDir = modulesDir;
    this.maxBody = maxBody;
    this.maxFunctions = maxFunctions;
    this.log = log;
    this.tenant = null;
    /** @type {Map<string, FunctionEntry>} */
    this.functions = new Map();
    this.running = new Map(); // function name -> calls in flight
    this.inflight = 0; // protocol requests of any kind in flight
    this.drained = null;
    this.notes = new Map(); // function name -> line for its logs once the runtime is back
    this.reloadCrashes = new Map(); // function name -> restarts during its reload in a row
    this.queue = Promise.resolve();
    this.handle = this.handle.bind(this);
    supervisor.on('exit', (exit) => this.onRuntimeExit(exit));
  }

  /** The http request listener. */
  handle(req, res) {
    this.inflight++;
    res.once('close', () => {
      this.inflight--;
      if (this.inflight === 0 && this.drained) this.drained();
    });
    const url = req.url;
    const method = req.method;
    if (url === '/healthz' || url.startsWith('/healthz?')) {
      if (method !== 'GET' && method !== 'HEAD') return this.notAllowed(res, 'GET');
      return sendJson(res, 200, { state: this.tenant === null ? 'idle' : 'assigned' });
    }
    if (!this.authorized(req)) {
      req.resume();
      return sendError(res, 401, 'unauthorized', 'missing or invalid runner token');
    }
    if (url.startsWith(RUN_PREFIX)) return this.run(req, res, url);

    const q = url.indexOf('?');
    const pathname = q < 0 ? url : url.slice(0, q);
    if (pathname === '/_fnhook/assign') {
      if (method !== 'POST') return this.notAllowed(res, 'POST');
      return this.reply(res, this.assign(req));
    }
    if (pathname === '/_fnhook/state') {
      if (method !== 'GET') return this.notAllowed(res, 'GET');
      return sendJson(res, 200, this.state());
    }
    if (pathname.startsWith(FUNCTIONS_PREFIX)) {
      const name = pathname.slice(FUNCTIONS_PREFIX.length);
      if (!NAME.test(name)) return sendError(res, 400, 'invalid_name', 'invalid function name');
      if (method === 'PUT') return this.reply(res, this.load(req, name));
      if (method === 'DELETE') return this.reply(res, this.unload(name));
      return this.notAllowed(res, 'PUT, DELETE');
    }
    if (pathname.startsWith(LOGS_PREFIX)) {
      const name = pathname.slice(LOGS_PREFIX.length);
      if (!NAME.test(name)) return sendError(res, 400, 'invalid_name', 'invalid function name');
      if (method !== 'GET') return this.notAllowed(res, 'GET');
      return this.reply(res, this.logs(name));
    }
    req.resume();
    sendError(res, 404, 'not_found', 'no such endpoint');
  }

  /**
   * Checks the Bearer token in constant time: both sides are hashed to 32 bytes first, so
   * neither the length nor the content of the token leaks through timing.
   */
  authorized(req) {
    const header = req.headers.authorization;
    let presented = '';
    if (typeof header === 'string' && header.length > 7 && header.slice(0, 7).toLowerCase() === 'bearer ') {
      presented = header.slice(7);
    }
    return crypto.timingSafeEqual(digest(presented), this.tokenDigest);
  }

  notAllowed(res, allow) {
    sendError(res, 405, 'method_not_allowed', `use ${allow}`, { allow });
  }

  /** Answers from a promise of {status, body?}; HttpErrors become error bodies. */
  reply(res, promise) {
    promise.then(
      ({ status, body }) => (body === undefined ? res.writeHead(status).end() : sendJson(res, status, body)),
      (err) => {
        if (!(err instanceof HttpError)) this.log('error', 'request failed', { error: err.stack });
        sendHttpError(res, err);
      },
    );
  }

  /** Runs `task` after every earlier load/unload finished: they change shared state. */
  serialize(task) {
    const run = this.queue.then(task);
    this.queue = run.catch(() => {});
    return run;
  }

  /** POST /_fnhook/assign: binds the runner to its one tenant, for life. */
  async assign(req) {
    const { tenant } = await readJson(req, CONTROL_BODY_LIMIT);
    if (typeof tenant !== 'string' || !NAME.test(tenant)) {
      throw new HttpError(400, 'invalid_tenant', 'tenant must match ^[a-z0-9][a-z0-9-]{0,62}$');
    }
    if (this.tenant !== null) throw new HttpError(409, 'already_assigned', 'this runner is already assigned');
    this.tenant = tenant;
    this.log('info', 'assigned', { tenant });
    return { status: 200, body: { tenant } };
  }

  /** GET /_fnhook/state: what a restarted handler needs to recover its view of this runner. */
  state() {
    const functions = {};
    for (const [name, fn] of this.functions) functions[name] = fn.version;
    return { tenant: this.tenant, functions };
  }

  /** PUT /_fnhook/functions/{name}: writes, links and loads a version; the old one stays on failure. */
  async load(req, name) {
    if (this.tenant === null) {
      req.resume();
      throw new HttpError(409, 'not_assigned', 'assign a tenant before loading functions');
    }
    const spec = validateSpec(await readJson(req, CONTROL_BODY_LIMIT));
    return this.serialize(async () => {
      const current = this.functions.get(name);
      if (current && current.version >= spec.version) {
        return { status: 200, body: { name, version: current.version, loadMs: 0 } };
      }
      if (!current && this.functions.size >= this.maxFunctions) {
        throw new HttpError(429, 'too_many_functions', `a runner holds at most ${this.maxFunctions} functions`);
      }
      await this.supervisor.whenReady(READY_WAIT_MS);
      const started = performance.now();
      const prepared = loader.prepareFunction({
        functionsDir: this.functionsDir,
        modulesDir: this.modulesDir,
        name,
        version: spec.version,
        code: spec.code,
        dependencies: spec.dependencies,
      });
      /** @type {FunctionEntry} */
      const entry = {
        name,
        version: spec.version,
        timeoutMs: spec.timeoutMs,
        file: prepared.file,
        format: prepared.format,
        configuration: spec.configuration,
      };
      try {
        await this.loadIntoChild(entry);
      } catch (err) {
        loader.removeVersion(this.functionsDir, name, spec.version);
        throw err;
      }
      this.functions.set(name, entry);
      const loadMs = Math.round((performance.now() - started) * 1000) / 1000;
      this.log('info', 'function loaded', { fn: name, version: entry.version, format: entry.format, loadMs });
      // Calls still running the old version may require files next to it for a while.
      if (current) this.removeOldVersionsLater(name, current.timeoutMs);
      return { status: 200, body: { name, version: entry.version, loadMs } };
    });
  }

  /** Tells the child to load `entry` (already on disk). Throws HttpError 422 on failure. */
  async loadIntoChild(entry) {
    const body = {
      name: entry.name,
      version: entry.version,
      file: entry.file,
      format: entry.format,
      tenant: this.tenant,
      configuration: entry.configuration,
      loadTimeoutMs: LOAD_TIMEOUT_MS,
    };
    let answer;
    try {
      answer = await this.supervisor.control('PUT', '/_ctl/load', body, LOAD_TIMEOUT_MS + 1000);
    } catch (err) {
      if (err instanceof ControlTimeout) {
        // Only a synchronous loop at top level gets here: the child's own deadline failed.
        this.supervisor.checkAlive(`function ${entry.name} did not finish loading`, entry.name);
        throw new HttpError(422, 'compile_error', `loading did not finish within ${LOAD_TIMEOUT_MS} ms`);
      }
      if (err instanceof ChildGoneError) {
        throw new HttpError(
          422,
          'compile_error',
          'the runtime crashed while loading this function (process exit or out of memory at top level?)',
        );
      }
      throw err;
    }
    if (answer.status === 200) return;
    const error = (answer.body && answer.body.error) || {};
    throw new HttpError(answer.status === 422 ? 422 : 500, error.code || 'load_failed', error.message || 'load failed');
  }

  /** Removes the folders of versions other than the current one, once calls on them are over. */
  removeOldVersionsLater(name, oldTimeoutMs) {
    const delay = Math.min(oldTimeoutMs, 60000) + OLD_VERSION_GRACE_MS;
    setTimeout(() => {
      this.serialize(() => {
        const current = this.functions.get(name);
        loader.removeVersions(this.functionsDir, name, current && current.version);
      }).catch((err) => this.log('warn', 'removing old versions failed', { fn: name, error: err.message }));
    }, delay).unref();
  }

  /** DELETE /_fnhook/functions/{name}. */
  unload(name) {
    return this.serialize(async () => {
      const current = this.functions.get(name);
      if (!current) throw new HttpError(404, 'function_not_loaded', `function ${name} is not loaded`);
      this.functions.delete(name);
      try {
        await this.supervisor.control('DELETE', `/_ctl/functions/${name}`, undefined, READY_WAIT_MS);
      } catch {
        // A runtime that is down reloads only what this.functions still lists.
      }
      this.log('info', 'function unloaded', { fn: name, version: current.version });
      this.removeOldVersionsLater(name, current.timeoutMs);
      return { status: 204 };
    });
  }

  /** GET /_fnhook/logs/{name}: the function's last console lines, kept by the child. */
  async logs(name) {
    await this.supervisor.whenReady(READY_WAIT_MS);
    const answer = await this.supervisor.control('GET', `/_ctl/logs/${name}`, undefined, READY_WAIT_MS);
    if (answer.status !== 200 || !answer.body) throw new Error(`logs: child answered ${answer.status}`);
    return { status: 200, body: { lines: answer.body.lines } };
  }

  /**
   * ANY /_fnhook/run/{name}[/{rest}][?query]: forwards the call to the child, streaming both
   * bodies, under the function's timeout.
   */
  run(req, res, url) {
    let end = RUN_PREFIX.length;
    while (end < url.length) {
      const c = url.charCodeAt(end);
      if (c === 47 /* / */ || c === 63 /* ? */) break;
      end++;
    }
    const name = url.slice(RUN_PREFIX.length, end);
    const fn = this.functions.get(name);
    if (!fn) {
      req.resume();
      return sendError(res, 404, 'function_not_loaded', `function ${name} is not loaded`);
    }
    const headers = req.headers;
    const minVersion = headers['x-fnhook-min-version'];
    if (minVersion !== undefined) {
      const wanted = Number(minVersion);
      if (!Number.isSafeInteger(wanted)) {
        req.resume();
        return sendError(res, 400, 'invalid_header', 'x-fnhook-min-version must be an integer');
      }
      if (fn.version < wanted) {
        req.resume();
        return sendError(res, 409, 'stale_version', `loaded version ${fn.version} is older than ${wanted}`, {
          'x-fnhook-version': String(fn.version),
        });
      }
    }
    const declared = headers['content-length'];
    if (declared !== undefined && Number(declared) > this.maxBody) {
      req.resume();
      return sendError(res, 413, 'too_large', `request body is larger than ${this.maxBody} bytes`);
    }
    this.forward(fn, req, res, url.slice('/_fnhook'.length));
  }

  /** Streams one call to the child and its answer back. */
  forward(fn, req, res, childPath) {
    const supervisor = this.supervisor;
    const name = fn.name;
    let upstream = null;
    let upstreamDone = false;
    let timedOut = false;
    let finished = false;
    this.running.set(name, (this.running.get(name) || 0) + 1);

    const timer = setTimeout(() => {
      timedOut = true;
      sendError(res, 504, 'timeout', `the function did not answer within ${fn.timeoutMs} ms`, {
        'x-fnhook-version': String(fn.version),
      });
      if (upstream) upstream.destroy();
      supervisor.checkAlive(`function ${name} timed out and its runtime stopped answering (a synchronous loop?)`, name);
    }, fn.timeoutMs);

    res.once('close', () => {
      finished = true;
      clearTimeout(timer);
      const left = this.running.get(name) - 1;
      if (left === 0) this.running.delete(name);
      else this.running.set(name, left);
      if (upstream && !upstreamDone) upstream.destroy(); // the caller went away: stop the call
    });

    const start = () => {
      if (timedOut || finished) return;
      const up = http.request({
        socketPath: supervisor.socketPath,
        agent: supervisor.agent,
        method: req.method,
        path: childPath,
        headers: forwardHeaders(req.rawHeaders),
      });
      upstream = up;
      up.once('response', (upRes) => {
        if (timedOut || finished) {
          upRes.resume();
          return;
        }
        res.writeHead(upRes.statusCode, responseHeaders(upRes.rawHeaders, fn.version));
        upRes.once('end', () => (upstreamDone = true));
        upRes.once('aborted', () => res.destroy());
        upRes.once('error', () => res.destroy());
        upRes.pipe(res);
      });
      up.once('error', () => {
        if (timedOut || finished) return;
        sendError(res, 502, 'function_crashed', 'the function runtime crashed; it is being restarted', {
          'x-fnhook-version': String(fn.version),
        });
      });
      if (req.headers['content-length'] === undefined && req.headers['transfer-encoding'] !== undefined) {
        this.limitBody(req, res, up);
      }
      req.pipe(up);
    };
    if (supervisor.ready) start();
    else supervisor.whenReady(fn.timeoutMs).then(start, () => {}); // the timer answers 504
  }

  /** Enforces the body limit on a chunked body, which declares no length up front. */
  limitBody(req, res, up) {
    let size = 0;
    const onData = (chunk) => {
      size += chunk.length;
      if (size <= this.maxBody) return;
      req.off('data', onData);
      req.unpipe(up);
      up.destroy();
      sendError(res, 413, 'too_large', `request body is larger than ${this.maxBody} bytes`);
    };
    req.on('data', onData);
  }

  /** Remembers, for each function the ended runtime was running, a line for its logs. */
  onRuntimeExit({ reason, culprit }) {
    const note = `the runtime restarted: ${reason}`;
    for (const name of this.running.keys()) this.notes.set(name, `${note} (while this function was running)`);
    if (culprit) this.notes.set(culprit, note);
  }

  /**
   * Reloads every loaded function into a freshly started child (the supervisor's start hook),
   * then writes the pending notes into their logs. A function whose reload fails, or that
   * took the runtime down twice in a row while reloading, is unloaded rather than looped on.
   */
  async reload() {
    const loaded = new Map();
    for (;;) {
      const pending = [...this.functions.values()].filter((fn) => loaded.get(fn.name) !== fn.version);
      if (pending.length === 0) break;
      for (const fn of pending) {
        if (this.functions.get(fn.name) !== fn) continue; // unloaded or replaced meanwhile
        try {
          await this.loadIntoChild(fn);
          loaded.set(fn.name, fn.version);
          this.reloadCrashes.delete(fn.name);
        } catch (err) {
          if (!this.supervisor.listening) {
            const crashes = (this.reloadCrashes.get(fn.name) || 0) + 1;
            this.reloadCrashes.set(fn.name, crashes);
            if (crashes >= 2) this.drop(fn, 'it crashed the runtime while being reloaded');
            return; // the runtime is gone: the next start reloads
          }
          this.drop(fn, `its reload failed: ${err.message}`);
        }
      }
    }
    for (const [name, msg] of this.notes) {
      this.notes.delete(name);
      try {
        await this.supervisor.control('POST', '/_ctl/log', { fn: name, level: 'error', msg }, READY_WAIT_MS);
      } catch {
        return;
      }
    }
  }

  /** Unloads a function the runtime cannot hold after a restart. */
  drop(fn, why) {
    if (this.functions.get(fn.name) !== fn) return;
    this.functions.delete(fn.name);
    this.reloadCrashes.delete(fn.name);
    this.notes.set(fn.name, `version ${fn.version} was unloaded: ${why}`);
    this.log('error', 'function unloaded after a runtime restart', { fn: fn.name, version: fn.version, why });
  }

  /** Resolves when no protocol request is in flight, or after `ms`. */
  drain(ms) {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.drained = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}

module.exports = { Protocol, forwardHeaders, responseHeaders, validateSpec, NAME };
