'use strict';
// Entry of the child process that hosts tenant code (started by supervisor.js, never by hand).
// It loads function versions that the parent wrote to disk and serves them with node:http on a
// Unix socket that only the parent talks to:
//   ANY    /run/{name}[/{rest}][?query]   invoke (headers and body as the caller sent them)
//   PUT    /_ctl/load                     {name, version, file, format, tenant, configuration,
//                                          loadTimeoutMs} -> 200 | 422
//   DELETE /_ctl/functions/{name}         unload -> 204 | 404
//   GET    /_ctl/logs/{name}              {lines: [...]}
//   POST   /_ctl/log                      {fn, level, msg}: add a line to a function's ring
//                                          buffer (the parent's notes; already in its stream)
//   GET    /_ctl/ping                     liveness, answered by the event loop
// argv: host.js <socketPath> <maxBodyBytes> [<logFd>]. The environment is the one the parent built.
// fd 3 is a pipe to the parent: "ready\n" is written once the socket listens, then it is closed.
// <logFd> (4) is a pipe to the parent that carries every captured log line as JSON (capture.js).

const fs = require('node:fs');
const http = require('node:http');
const querystring = require('node:querystring');
const { randomUUID } = require('node:crypto');
const { pathToFileURL } = require('node:url');
const { Capture, PipeSink } = require('./capture');
const { describeLoadError } = require('./loader');
const { HttpError, sendJson, sendError, sendHttpError, readBody, readJson } = require('./jsonhttp');

/** Bytes a control request body may have (load specs hold paths and configuration, not code). */
const CONTROL_BODY_LIMIT = 2 * 1024 * 1024;
/** How long SIGTERM waits for in-flight calls. */
const DRAIN_MS = 5000;

/**
 * A loaded function version.
 * @typedef {{name: string, version: number, handler: Function, form: 1|2|3, file: string,
 *   format: 'cjs'|'esm', tenant: string, configuration: object}} Loaded
 */

/** Freezes `value` and everything reachable from it (configuration is shared by all calls). */
function deepFreeze(value) {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const key of Object.keys(value)) deepFreeze(value[key]);
  }
  return value;
}

/** The stack of a thrown value, or its string form. */
function stackOf(err) {
  return err instanceof Error && err.stack ? err.stack : `thrown: ${String(err)}`;
}

/** The calling convention of a handler, told by its arity: 2 is a callback, 3+ is req/res. */
function formOf(handler) {
  if (handler.length >= 3) return 3;
  if (handler.length === 2) return 2;
  return 1;
}

/** Error for a result that cannot be turned into a response. */
class InvalidResult extends Error {}

/** Media type of a content-type header, lower-cased, without parameters. */
function mediaType(contentType) {
  if (!contentType) return '';
  const semi = contentType.indexOf(';');
  return (semi < 0 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
}

/**
 * ctx.body for a raw body: parsed JSON for application/json (and +json types), an object for
 * application/x-www-form-urlencoded, else the Buffer itself; undefined when there is no body.
 * Throws HttpError 400 `invalid_json` for a JSON body that does not parse.
 */
function parseBody(raw, contentType) {
  if (raw.length === 0) return undefined;
  const type = mediaType(contentType);
  if (type === 'application/json' || type.endsWith('+json')) {
    try {
      return JSON.parse(raw.toString('utf8'));
    } catch {
      throw new HttpError(400, 'invalid_json', 'request body is not valid JSON');
    }
  }
  if (type === 'application/x-www-form-urlencoded') return querystring.parse(raw.toString('utf8'));
  return raw;
}

/**
 * Writes the result of a form 1 or 2 handler: {status?, headers?, body?}. A string, Buffer,
 * array or primitive result is taken as the body. Throws InvalidResult for a bad status,
 * header or body; nothing has been sent then.
 */
function writeResult(req, res, result, version) {
  let status = 200;
  let headers;
  let body = result;
  if (result && typeof result === 'object' && !Array.isArray(result) && !ArrayBuffer.isView(result)) {
    ({ status = 200, headers, body } = result);
  }
  if (typeof status === 'string' && /^\d{3}$/.test(status)) status = Number(status);
  if (!Number.isInteger(status) || status < 200 || status > 599) {
    throw new InvalidResult(`invalid status ${String(status)}`);
  }
  if (headers !== undefined && (headers === null || typeof headers !== 'object')) {
    throw new InvalidResult('headers must be an object');
  }
  for (const [name, value] of Object.entries(headers || {})) {
    // x-fnhook-* answer headers are the runner's (e.g. x-fnhook-error, x-fnhook-version).
    if (name.toLowerCase().startsWith('x-fnhook-')) continue;
    try {
      res.setHeader(name, value);
    } catch (err) {
      throw new InvalidResult(`invalid header ${JSON.stringify(name)}: ${err.message}`);
    }
  }
  // The runner frames the body itself.
  res.removeHeader('content-length');
  res.removeHeader('transfer-encoding');
  res.setHeader('x-fnhook-version', String(version));

  let payload;
  let type;
  if (body === undefined || body === null) {
    payload = Buffer.alloc(0);
  } else if (typeof body === 'string') {
    payload = Buffer.from(body);
    type = 'text/plain; charset=utf-8';
  } else if (ArrayBuffer.isView(body)) {
    payload = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    type = 'application/octet-stream';
  } else {
    let json;
    try {
      json = JSON.stringify(body);
    } catch (err) {
      throw new InvalidResult(`body is not serialisable as JSON: ${err.message}`);
    }
    payload = Buffer.from(json === undefined ? '' : json);
    type = 'application/json';
  }
  if (type && payload.length > 0 && !res.hasHeader('content-type')) res.setHeader('content-type', type);
  const bodiless = status === 204 || status === 304 || req.method === 'HEAD';
  if (!bodiless) res.setHeader('content-length', payload.length);
  res.writeHead(status);
  res.end(bodiless ? undefined : payload);
}

/**
 * The host: loaded functions, the console capture and the socket server. One per process.
 */
class Host {
  /** `sink` receives every captured line (a PipeSink to the parent); none in unit use. */
  constructor({ socketPath, maxBody, sink }) {
    this.socketPath = socketPath;
    this.maxBody = maxBody;
    /** @type {Map<string, Loaded>} */
    this.functions = new Map();
    this.capture = new Capture(sink);
    this.imports = 0; // makes each ES module load a fresh module instance
    this.inflight = 0;
    this.server = http.createServer((req, res) => this.route(req, res));
    // The parent's keep-alive agent owns the connections and the deadlines: an idle timeout
    // here would race with the agent reusing a socket and fail a call for nothing.
    this.server.keepAliveTimeout = 0;
    this.server.requestTimeout = 0;
  }

  /** Starts serving on the socket; resolves once it listens. */
  listen() {
    try {
      fs.unlinkSync(this.socketPath);
    } catch {}
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.socketPath, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  /** Dispatches one request from the parent. */
  route(req, res) {
    this.inflight++;
    res.once('close', () => {
      this.inflight--;
      if (this.draining && this.inflight === 0) process.exit(0);
    });
    const url = req.url;
    if (url.startsWith('/run/')) {
      this.run(req, res, url);
      return;
    }
    const method = req.method;
    if (url === '/_ctl/ping') return sendJson(res, 200, { ok: true });
    if (url === '/_ctl/load' && method === 'PUT') return this.handle(res, this.onLoad(req));
    if (url === '/_ctl/log' && method === 'POST') return this.handle(res, this.onLog(req));
    if (url.startsWith('/_ctl/functions/') && method === 'DELETE') {
      const name = url.slice('/_ctl/functions/'.length);
      if (!this.functions.has(name)) return sendError(res, 404, 'function_not_loaded', `function ${name} is not loaded`);
      this.unload(name);
      res.writeHead(204).end();
      return;
    }
    if (url.startsWith('/_ctl/logs/') && method === 'GET') {
      return sendJson(res, 200, { lines: this.capture.lines(url.slice('/_ctl/logs/'.length)) });
    }
    sendError(res, 404, 'not_found', 'no such path');
  }

  /** Answers a control request from a promise of {status, body}. */
  handle(res, promise) {
    promise.then(
      ({ status, body }) => (body === undefined ? res.writeHead(status).end() : sendJson(res, status, body)),
      (err) => sendHttpError(res, err),
    );
  }

  /** PUT /_ctl/load: requires or imports a version the parent wrote, then makes it current. */
  async onLoad(req) {
    const spec = await readJson(req, CONTROL_BODY_LIMIT);
    const { name, version, file, format, tenant, configuration, loadTimeoutMs } = spec;
    let timer;
    // A top-level await that never settles must not hold the load forever, nor register the
    // version later behind the parent's back (once the race is lost, nothing registers it).
    const deadline = new Promise((_, reject) => {
      timer = setTimeout(() => {
        reject(new HttpError(422, 'compile_error', `loading did not finish within ${loadTimeoutMs} ms`));
      }, loadTimeoutMs);
    });
    let exported;
    try {
      const scope = { fn: name, version };
      exported = await Promise.race([this.capture.run(scope, () => this.evaluate(file, format)), deadline]);
    } catch (err) {
      if (format === 'cjs') this.forget(file);
      if (err instanceof HttpError) throw err;
      this.capture.emit({ fn: name, version }, 'error', `load failed: ${stackOf(err)}`);
      throw new HttpError(422, 'compile_error', describeLoadError(err, file));
    } finally {
      clearTimeout(timer);
    }

    let handler = exported;
    if (typeof handler !== 'function' && handler && typeof handler.default === 'function') {
      handler = handler.default; // transpiled ES modules (exports.default = ...)
    }
    if (typeof handler !== 'function') {
      if (format === 'cjs') this.forget(file);
      throw new HttpError(
        422,
        'compile_error',
        format === 'esm'
          ? 'the module must `export default` a function'
          : 'the module must set `module.exports` to a function',
      );
    }
    const previous = this.functions.get(name);
    this.functions.set(name, {
      name,
      version,
      handler,
      form: formOf(handler),
      file,
      format,
      tenant,
      configuration: deepFreeze(structuredClone(configuration || {})),
    });
    if (previous && previous.file !== file && previous.format === 'cjs') this.forget(previous.file);
    return { status: 200, body: { name, version, form: formOf(handler) } };
  }

  /** Runs the module's top level and returns its export (module.exports or the namespace's default). */
  async evaluate(file, format) {
    if (format === 'esm') {
      // The query makes a reload of the same path a fresh module instance.
      const ns = await import(`${pathToFileURL(file).href}?load=${++this.imports}`);
      return ns.default;
    }
    return require(file);
  }

  /** Drops a CommonJS file from require's cache so that its memory can be reclaimed. */
  forget(file) {
    const cached = require.cache[file];
    if (!cached) return;
    delete require.cache[file];
    const index = module.children.indexOf(cached);
    if (index >= 0) module.children.splice(index, 1);
  }

  /** Unloads function `name`. */
  unload(name) {
    const fn = this.functions.get(name);
    this.functions.delete(name);
    if (fn && fn.format === 'cjs') this.forget(fn.file);
    this.capture.drop(name);
  }

  /**
   * POST /_ctl/log: adds a line the parent wants the tenant to see (e.g. why it restarted) to
   * the function's ring buffer; the parent put it into the stream itself.
   */
  async onLog(req) {
    const { fn, level, msg } = await readJson(req, CONTROL_BODY_LIMIT);
    if (typeof fn === 'string') this.capture.note(fn, level, msg);
    return { status: 204 };
  }

  /** Invokes a function for /run/{name}[/{rest}][?query]. */
  run(req, res, url) {
    const q = url.indexOf('?');
    const pathPart = q < 0 ? url : url.slice(0, q);
    const search = q < 0 ? '' : url.slice(q + 1);
    const slash = pathPart.indexOf('/', 5);
    const name = slash < 0 ? pathPart.slice(5) : pathPart.slice(5, slash);
    const rest = slash < 0 ? '/' : pathPart.slice(slash);
    const fn = this.functions.get(name);
    if (!fn) return sendError(res, 404, 'function_not_loaded', `function ${name} is not loaded`);

    const headers = req.headers;
    const ctx = {
      method: req.method,
      path: rest,
      query: querystring.parse(search),
      headers,
      rawBody: undefined,
      body: undefined,
      configuration: fn.configuration,
      tenant: fn.tenant,
      function: name,
      requestId: headers['x-fnhook-request-id'] || randomUUID(),
    };
    if (fn.form === 3) {
      req.url = q < 0 ? rest : `${rest}?${search}`;
      res.setHeader('x-fnhook-version', String(fn.version));
      this.capture.run({ fn: name, version: fn.version, requestId: ctx.requestId }, () => this.invokeHttp(fn, ctx, req, res));
      return;
    }
    readBody(req, this.maxBody).then(
      (raw) => {
        ctx.rawBody = raw;
        try {
          ctx.body = parseBody(raw, headers['content-type']);
        } catch (err) {
          return sendHttpError(res, err);
        }
        this.capture.run({ fn: name, version: fn.version, requestId: ctx.requestId }, () => this.invoke(fn, ctx, req, res));
      },
      (err) => sendHttpError(res, err),
    );
  }

  /** Calls a form 1 (promise) or form 2 (callback) handler and writes its result. */
  invoke(fn, ctx, req, res) {
    let settled = false;
    const succeed = (result) => {
      if (settled) return;
      settled = true;
      try {
        writeResult(req, res, result, fn.version);
      } catch (err) {
        if (!(err instanceof InvalidResult)) throw err;
        this.capture.emit(this.scopeOf(fn), 'error', `invalid result: ${err.message}`);
        sendError(res, 500, 'invalid_result', 'the function returned an invalid response');
      }
    };
    const fail = (err) => {
      if (settled) return;
      settled = true;
      this.fail(fn, res, err);
    };
    try {
      if (fn.form === 2) {
        const returned = fn.handler(ctx, (err, result) => (err ? fail(err) : succeed(result)));
        if (returned && typeof returned.then === 'function') returned.then(undefined, fail);
      } else {
        const returned = fn.handler(ctx);
        if (returned && typeof returned.then === 'function') returned.then(succeed, fail);
        else succeed(returned);
      }
    } catch (err) {
      fail(err);
    }
  }

  /** Calls a form 3 handler with Node's own req and res. */
  invokeHttp(fn, ctx, req, res) {
    try {
      const returned = fn.handler(ctx, req, res);
      if (returned && typeof returned.then === 'function') returned.then(undefined, (err) => this.fail(fn, res, err));
    } catch (err) {
      this.fail(fn, res, err);
    }
  }

  /** The capture scope of the call running now, or one for `fn` when outside it. */
  scopeOf(fn) {
    const scope = this.capture.current();
    return scope && scope.fn === fn.name ? scope : { fn: fn.name, version: fn.version };
  }

  /** Logs a function's failure to its own console and answers a safe 500. */
  fail(fn, res, err) {
    this.capture.emit(this.scopeOf(fn), 'error', stackOf(err));
    sendError(res, 500, 'function_error', 'the function failed', { 'x-fnhook-version': String(fn.version) });
  }

  /** Stops taking requests and exits when in-flight calls are done (at most DRAIN_MS). */
  drain() {
    if (this.draining) return;
    this.draining = true;
    this.server.close();
    this.server.closeIdleConnections();
    if (this.inflight === 0) process.exit(0);
    setTimeout(() => process.exit(0), DRAIN_MS).unref();
  }
}

/** Starts the host from argv and tells the parent on fd 3 once it listens. */
async function main() {
  const [socketPath, maxBody, logFd] = process.argv.slice(2);
  // Only a descriptor the parent says it passed: any other may be one of Node's own.
  const sink = logFd ? new PipeSink(Number(logFd)) : undefined;
  const host = new Host({ socketPath, maxBody: Number(maxBody), sink });
  host.capture.install(console);
  // Tenant code must not take the other functions down with a stray throw in a timer or an
  // unhandled rejection: record it on the function it came from and carry on.
  process.on('uncaughtException', (err) =>
    host.capture.emit(host.capture.current(), 'error', `uncaught exception: ${stackOf(err)}`),
  );
  process.on('unhandledRejection', (reason) =>
    host.capture.emit(host.capture.current(), 'error', `unhandled rejection: ${stackOf(reason)}`),
  );
  process.on('SIGTERM', () => host.drain());
  process.on('SIGINT', () => host.drain());
  // stdin is a pipe from the parent that is never written: EOF means the parent is gone.
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();

  await host.listen();
  fs.writeSync(3, 'ready\n');
  fs.closeSync(3);
}

if (require.main === module) {
  main().catch((err) => {
    process.stderr.write(`fnhook host: ${stackOf(err)}\n`);
    process.exit(1);
  });
}

module.exports = { Host, parseBody, writeResult, formOf };
