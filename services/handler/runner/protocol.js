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
//   GET    /_fnhook/logs?after=&wait=    the runner's log stream: {"lines": [{seq, ...}], next, missed, dropped}

const crypto = require('node:crypto');
const http = require('node:http');
const { performance } = require('node:perf_hooks');
const loader = require('./loader');
const { ChildGoneError, ControlTimeout } = require('./supervisor');
const { HttpError, discard, sendJson, sendError, sendHttpError, readJson } = require('./jsonhttp');

/** Tenant and function names. */
const NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;
/** Answers up to this size (with a Content-Length) are sent in one write. */
const SMALL_ANSWER = 64 * 1024;
/** Largest body of a protocol request other than run (code is at most about 1 MiB). */
const CONTROL_BODY_LIMIT = 2 * 1024 * 1024;
/** How long a load may run in the child (module top level included). */
const LOAD_TIMEOUT_MS = 10000;
/** How long a load, unload or logs request waits for a restarting runtime. */
const READY_WAIT_MS = 10000;
/** How long a call waits for a restarting runtime before 503 (not counted in its timeout). */
const RESTART_WAIT_MS = 5000;
/** Default and largest per-call timeout. */
const DEFAULT_TIMEOUT_MS = 10000;
const MAX_TIMEOUT_MS = 2 ** 31 - 1; // setTimeout's limit
/** How long an old version's folder outlives its replacement, beyond its own timeout. */
const OLD_VERSION_GRACE_MS = 1000;
/** Longest wait of a log stream read, in seconds (the Go client's timeout is 30 s). */
const MAX_LOG_WAIT_S = 25;
/** Default and largest number of lines in one log stream answer. */
const DEFAULT_LOG_LIMIT = 500;
const MAX_LOG_LIMIT = 1000;
/** About the most bytes of lines in one log stream answer. */
const LOG_ANSWER_BYTES = 1 << 20;
/**
 * How long a waiting log stream read lets new lines gather before it answers (unless `limit`
 * of them are there): one read per ~100 ms for a chatty function rather than one per line.
 */
const LOG_LINGER_MS = 100;

const RUN_PREFIX = '/_fnhook/run/';
const FUNCTIONS_PREFIX = '/_fnhook/functions/';
const LOGS_PREFIX = '/_fnhook/logs/';
const LOG_STREAM = '/_fnhook/logs';

// Request headers that stay between the caller and the runner. transfer-encoding is kept so
// that a chunked body is framed the same way to the child.
const DROP_REQUEST = new Set(['authorization', 'connection', 'keep-alive', 'proxy-connection', 'upgrade', 'te', 'trailer', 'expect']);
// Response headers the parent frames itself.
const DROP_RESPONSE = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'trailer']);

/**
 * The caller's raw headers minus the runner token, hop-by-hop and internal x-fnhook-* ones.
 * The gateway moves the webhook sender's own Authorization to x-fnhook-authorization (the
 * runner token takes its place): the function gets it back as authorization.
 */
function forwardHeaders(raw) {
  const out = [];
  for (let i = 0; i < raw.length; i += 2) {
    const lower = raw[i].toLowerCase();
    if (DROP_REQUEST.has(lower)) continue;
    if (lower.startsWith('x-fnhook-') && lower !== 'x-fnhook-request-id') {
      if (lower === 'x-fnhook-authorization') out.push('authorization', raw[i + 1]);
      continue;
    }
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
   * @param {import('./logbuffer').LogBuffer} options.logs  The log stream (timeouts and
   *   restarts are added to it here).
   */
  constructor({ token, supervisor, functionsDir, modulesDir, maxBody, maxFunctions, log, logs }) {
    this.tokenDigest = digest(token);
    this.supervisor = supervisor;
    this.functionsDir = functionsDir;
    this.modulesDir = modulesDir;
    this.maxBody = maxBody;
    this.maxFunctions = maxFunctions;
    this.log = log;
    this.logs = logs;
    this.tenant = null;
    /** @type {Map<string, FunctionEntry>} */
    this.functions = new Map();
    this.running = new Map(); // function name -> calls in flight
    this.runs = 0; // calls in flight, all functions
    this.lastActive = Date.now(); // start, assignment, or end of the last call
    this.inflight = 0; // protocol requests of any kind in flight
    this.drained = null;
    this.notes = new Map(); // function name -> line for its logs once the runtime is back
    this.cutOff = new Map(); // function name -> when a call of it lost its runtime connection
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
      discard(req);
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
    if (pathname === LOG_STREAM) {
      if (method !== 'GET') return this.notAllowed(res, 'GET');
      return this.stream(req, res, q < 0 ? '' : url.slice(q + 1));
    }
    if (pathname.startsWith(LOGS_PREFIX)) {
      const name = pathname.slice(LOGS_PREFIX.length);
      if (!NAME.test(name)) return sendError(res, 400, 'invalid_name', 'invalid function name');
      if (method !== 'GET') return this.notAllowed(res, 'GET');
      return this.reply(res, this.functionLogs(name));
    }
    discard(req);
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

  /** 405 with the methods a path accepts. */
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
    this.lastActive = Date.now();
    this.log('info', 'assigned', { tenant });
    return { status: 200, body: { tenant } };
  }

  /**
   * GET /_fnhook/state: what a restarted handler needs to recover its view of this runner,
   * and what its idle reaper needs (calls go from the gateway straight here): `idleMs` since
   * the last call ended (or the assignment) and `inflight` calls.
   */
  state() {
    const functions = {};
    for (const [name, fn] of this.functions) functions[name] = fn.version;
    return { tenant: this.tenant, functions, idleMs: Date.now() - this.lastActive, inflight: this.runs };
  }

  /** PUT /_fnhook/functions/{name}: writes, links and loads a version; the old one stays on failure. */
  async load(req, name) {
    if (this.tenant === null) {
      discard(req);
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
      this.log('info', 'function loaded', { function: name, version: entry.version, format: entry.format, loadMs });
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
      }).catch((err) => this.log('warn', 'removing old versions failed', { function: name, error: err.message }));
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
      this.log('info', 'function unloaded', { function: name, version: current.version });
      this.removeOldVersionsLater(name, current.timeoutMs);
      return { status: 204 };
    });
  }

  /** GET /_fnhook/logs/{name}: the function's last console lines, kept by the child. */
  async functionLogs(name) {
    await this.supervisor.whenReady(READY_WAIT_MS);
    const answer = await this.supervisor.control('GET', `/_ctl/logs/${name}`, undefined, READY_WAIT_MS);
    if (answer.status !== 200 || !answer.body) throw new Error(`logs: child answered ${answer.status}`);
    return { status: 200, body: { lines: answer.body.lines } };
  }

  /**
   * GET /_fnhook/logs?after=<seq>&wait=<s>&limit=<n>: the log stream's lines after `after`
   * (0: from the oldest kept). With none there yet, waits up to `wait` seconds for one (a long
   * poll; 0 answers at once); a waiting read answers once its first line is LOG_LINGER_MS old
   * (or `limit` lines are there). Answers {lines, next, missed, dropped}: the next read passes
   * `next` as `after`; `missed` lines in between are gone (evicted or dropped);
   * `dropped` counts every line dropped before it was kept, since the runner started.
   */
  async stream(req, res, query) {
    discard(req);
    const params = new URLSearchParams(query);
    const number = (name, fallback, min, max, integer = true) => {
      const raw = params.get(name);
      if (raw === null || raw === '') return fallback;
      const value = Number(raw);
      if (!Number.isFinite(value) || (integer && !Number.isSafeInteger(value)) || value < min || value > max) {
        throw new HttpError(400, 'invalid_query', `${name} must be ${integer ? 'an integer' : 'a number'} from ${min} to ${max}`);
      }
      return value;
    };
    let after, wait, limit;
    try {
      after = number('after', 0, 0, Number.MAX_SAFE_INTEGER);
      wait = number('wait', 0, 0, MAX_LOG_WAIT_S, false);
      limit = number('limit', DEFAULT_LOG_LIMIT, 1, MAX_LOG_LIMIT);
      if (after > this.logs.seq) {
        throw new HttpError(400, 'invalid_cursor', `after is beyond the newest line (${this.logs.seq}): a cursor from another runner?`);
      }
    } catch (err) {
      return sendHttpError(res, err);
    }
    if (wait > 0) {
      const gone = new AbortController();
      res.once('close', () => gone.abort());
      await this.logs.wait(after, wait * 1000, gone.signal);
      await this.logs.linger(after, LOG_LINGER_MS, Math.min(limit, this.logs.maxLines >> 1), gone.signal);
      if (res.destroyed) return;
    }
    const { lines, next, missed } = this.logs.read(after, limit, LOG_ANSWER_BYTES);
    const body = `{"lines":[${lines.join(',')}],"next":${next},"missed":${missed},"dropped":${this.logs.dropped}}`;
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }

  /** Adds a line of the runner about function `fn` to the log stream. */
  report(fn, requestId, msg) {
    this.logs.add({ source: 'runner', level: 'error', fn: fn.name, version: fn.version, requestId, msg });
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
      discard(req);
      return sendError(res, 404, 'function_not_loaded', `function ${name} is not loaded`);
    }
    const headers = req.headers;
    const minVersion = headers['x-fnhook-min-version'];
    if (minVersion !== undefined) {
      const wanted = Number(minVersion);
      if (!Number.isSafeInteger(wanted)) {
        discard(req);
        return sendError(res, 400, 'invalid_header', 'x-fnhook-min-version must be an integer');
      }
      if (fn.version < wanted) {
        discard(req);
        return sendError(res, 409, 'stale_version', `loaded version ${fn.version} is older than ${wanted}`, {
          'x-fnhook-version': String(fn.version),
        });
      }
    }
    const declared = headers['content-length'];
    if (declared !== undefined && Number(declared) > this.maxBody) {
      discard(req);
      return sendError(res, 413, 'too_large', `request body is larger than ${this.maxBody} bytes`);
    }
    this.forward(fn, req, res, url.slice('/_fnhook'.length));
  }

  /** Streams one call to the child and its answer back. */
  forward(fn, req, res, childPath) {
    const supervisor = this.supervisor;
    const name = fn.name;
    const version = { 'x-fnhook-version': String(fn.version) };
    let upstream = null;
    let upstreamDone = false;
    let answered = false; // by the parent itself (504, 413): ignore what the child does next
    let finished = false; // the response is over or the caller is gone
    let retried = false;
    const length = req.headers['content-length'];
    const chunked = req.headers['transfer-encoding'] !== undefined;
    const bodiless = !chunked && (length === undefined || length === '0');
    this.running.set(name, (this.running.get(name) || 0) + 1);
    this.runs++;

    let timer = null;
    const onTimeout = () => {
      answered = true;
      this.report(fn, req.headers['x-fnhook-request-id'], `the call timed out after ${fn.timeoutMs} ms (answered 504)`);
      sendError(res, 504, 'timeout', `the function did not answer within ${fn.timeoutMs} ms`, version);
      if (upstream) upstream.destroy();
      supervisor.checkAlive(`function ${name} timed out and its runtime stopped answering (a synchronous loop?)`, name);
    };

    res.once('close', () => {
      finished = true;
      clearTimeout(timer);
      const left = this.running.get(name) - 1;
      if (left === 0) this.running.delete(name);
      else this.running.set(name, left);
      this.runs--;
      this.lastActive = Date.now();
      if (upstream && !upstreamDone) upstream.destroy(); // the caller went away: stop the call
    });

    const start = () => {
      if (answered || finished) return;
      // The function's time starts when the call reaches it, not while its runtime restarts.
      if (timer === null) timer = setTimeout(onTimeout, fn.timeoutMs);
      const up = http.request({
        socketPath: supervisor.socketPath,
        agent: supervisor.agent,
        method: req.method,
        path: childPath,
        headers: forwardHeaders(req.rawHeaders),
      });
      upstream = up;
      up.once('response', (upRes) => {
        supervisor.answers++;
        if (answered || finished) {
          upRes.resume();
          return;
        }
        const headers = responseHeaders(upRes.rawHeaders, fn.version);
        upRes.once('aborted', () => res.destroy());
        upRes.once('error', () => res.destroy());
        const size = Number(upRes.headers['content-length']);
        if (size >= 0 && size <= SMALL_ANSWER) {
          // A small answer of known size goes out in one write, headers and body together:
          // piping costs a write per piece, and the writes were most of this process's time.
          const chunks = [];
          upRes.on('data', (c) => chunks.push(c));
          upRes.once('end', () => {
            upstreamDone = true;
            if (answered || finished || res.headersSent) return;
            res.writeHead(upRes.statusCode, headers);
            res.end(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
          });
          return;
        }
        res.writeHead(upRes.statusCode, headers);
        upRes.once('end', () => (upstreamDone = true));
        upRes.pipe(res);
      });
      up.once('error', (err) => {
        if (answered || finished) return;
        // Hold new calls until the runtime is known to be alive or has been restarted.
        supervisor.checkAlive('the runtime stopped answering');
        if (bodiless && !retried && !up.reusedSocket && (err.code === 'ECONNREFUSED' || err.code === 'ENOENT')) {
          // Never reached the child (it was just going down) and has no body to replay.
          retried = true;
          waitThenStart();
          return;
        }
        // The socket often reports a crash before the child's exit does: remember whom it hit.
        this.cutOff.set(name, Date.now());
        this.report(fn, req.headers['x-fnhook-request-id'], 'the runtime crashed during the call (answered 502)');
        sendError(res, 502, 'function_crashed', 'the function runtime crashed; it is being restarted', version);
      });
      if (bodiless) {
        // No body: send at once rather than wait for the request's end.
        req.resume();
        up.end();
        return;
      }
      if (length === undefined) {
        // A chunked body declares no length up front: count it as it streams.
        let size = 0;
        const count = (chunk) => {
          size += chunk.length;
          if (size <= this.maxBody || answered) return;
          answered = true;
          req.off('data', count);
          req.unpipe(up);
          up.destroy();
          discard(req);
          sendError(res, 413, 'too_large', `request body is larger than ${this.maxBody} bytes`);
        };
        req.on('data', count);
      }
      req.pipe(up);
    };
    const waitThenStart = () =>
      supervisor.whenReady(RESTART_WAIT_MS).then(start, (err) => {
        if (!answered && !finished) sendHttpError(res, err);
      });
    if (supervisor.ready) start();
    else waitThenStart();
  }

  /**
   * Remembers, for each function the ended runtime was running, a line for its logs (written
   * into the new child's ring buffers once it is up) and adds it to the log stream now.
   */
  onRuntimeExit({ reason, culprit }) {
    const note = `the runtime restarted: ${reason}`;
    const recent = Date.now() - 2000;
    const notes = new Map();
    for (const [name, at] of this.cutOff) {
      if (at >= recent) notes.set(name, `${note} (while this function was running)`);
    }
    this.cutOff.clear();
    for (const name of this.running.keys()) notes.set(name, `${note} (while this function was running)`);
    if (culprit) notes.set(culprit, note);
    for (const [name, msg] of notes) this.note(name, msg);
  }

  /** A line for function `name`'s logs: into the stream now, into its ring buffer on reload. */
  note(name, msg, version = this.functions.get(name)?.version) {
    this.notes.set(name, msg);
    this.logs.add({ source: 'runner', level: 'error', fn: name, version, msg });
  }

  /**
   * Reloads every loaded function into a freshly started child (the supervisor's start hook),
   * then writes the pending notes into their logs. A function whose reload fails, or that
   * took the runtime down twice in a row while reloading, is unloaded rather than looped on.
   */
  async reload() {
    if (!this.warmedUp) {
      this.warmedUp = true;
      await this.warmUp();
    }
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

  /**
   * Loads, calls and unloads a throwaway CommonJS and ES module function once, before the first
   * child takes calls: the code paths of a load and a call (in both processes) then run compiled
   * and warm when the runner, idle in the warm pool until now, gets its first tenant.
   */
  async warmUp() {
    const name = '.warmup'; // function names cannot start with a dot
    const codes = ['module.exports = async (ctx) => ({ body: ctx.body });', 'export default async (ctx) => ({ body: ctx.body });'];
    try {
      for (const [index, code] of codes.entries()) {
        const version = index + 1;
        const prepared = loader.prepareFunction({ functionsDir: this.functionsDir, modulesDir: this.modulesDir, name, version, code });
        await this.loadIntoChild({ name, version, timeoutMs: 1000, configuration: {}, ...prepared });
        await this.supervisor.control('POST', `/run/${name}/path?q=1`, { warm: true }, READY_WAIT_MS);
      }
      await this.supervisor.control('DELETE', `/_ctl/functions/${name}`, undefined, READY_WAIT_MS);
    } catch (err) {
      this.log('warn', 'warm-up failed', { error: err.message });
    } finally {
      loader.removeVersions(this.functionsDir, name, undefined);
    }
  }

  /** Unloads a function the runtime cannot hold after a restart. */
  drop(fn, why) {
    if (this.functions.get(fn.name) !== fn) return;
    this.functions.delete(fn.name);
    this.reloadCrashes.delete(fn.name);
    this.note(fn.name, `version ${fn.version} was unloaded: ${why}`, fn.version);
    this.log('error', 'function unloaded after a runtime restart', { function: fn.name, version: fn.version, why });
  }

  /** Resolves when no protocol request is in flight, or after `ms`. */
  drain(ms) {
    this.logs.close(); // long polls answer now rather than hold the shutdown
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
