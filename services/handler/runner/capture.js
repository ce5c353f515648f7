'use strict';
// Console capture for the host (child) process: every console call made by tenant code is
// attributed to the function whose load or invocation it happened in, written to stdout as one
// JSON line, and kept in that function's ring buffer for GET /_fnhook/logs/{name}.

const { AsyncLocalStorage } = require('node:async_hooks');
const util = require('node:util');

/** Number of lines kept per function. */
const MAX_LINES = 200;
/** Longest message kept, in bytes of UTF-8; longer ones are cut. */
const MAX_MSG_BYTES = 4096;

/** Cuts `msg` to MAX_MSG_BYTES of UTF-8 (a cut multi-byte character becomes U+FFFD). */
function truncate(msg) {
  // A UTF-16 code unit is at most 3 bytes of UTF-8, so short strings need no byte count.
  if (msg.length * 3 <= MAX_MSG_BYTES || Buffer.byteLength(msg) <= MAX_MSG_BYTES) return msg;
  return Buffer.from(msg).subarray(0, MAX_MSG_BYTES).toString('utf8') + ' [truncated]';
}

/**
 * Captures console output per function. Attribution uses AsyncLocalStorage, so output from
 * concurrent async invocations (timers, promises, I/O callbacks started by a call) lands in the
 * buffer of the function that started them. Output outside any function goes to stdout only,
 * with "fn": null.
 */
class Capture {
  /** `write(line)` receives each JSON line, newline included (stdout by default). */
  constructor(write) {
    const out = process.stdout;
    this.write = write || ((line) => out.write(line));
    this.storage = new AsyncLocalStorage();
    /** @type {Map<string, Array<{ts: string, level: string, msg: string}>>} */
    this.buffers = new Map();
  }

  /** Runs `callback` with console output attributed to function `name`; returns its result. */
  run(name, callback) {
    return this.storage.run(name, callback);
  }

  /** The function the current async context belongs to, or undefined. */
  current() {
    return this.storage.getStore();
  }

  /** Records one line for function `name` (or for nobody, if name is undefined). */
  emit(name, level, msg) {
    msg = truncate(String(msg));
    const ts = new Date().toISOString();
    this.write(JSON.stringify({ fn: name ?? null, level, msg, ts }) + '\n');
    if (name === undefined) return;
    let lines = this.buffers.get(name);
    if (!lines) this.buffers.set(name, (lines = []));
    lines.push({ ts, level, msg });
    if (lines.length > MAX_LINES) lines.shift();
  }

  /** The buffered lines of function `name`, oldest first (a copy). */
  lines(name) {
    const lines = this.buffers.get(name);
    return lines ? lines.slice() : [];
  }

  /** Forgets the buffered lines of function `name` (on unload). */
  drop(name) {
    this.buffers.delete(name);
  }

  /** Replaces the methods of `target` (the global console) with capturing ones. */
  install(target) {
    const levels = { log: 'log', info: 'info', debug: 'log', warn: 'warn', error: 'error' };
    for (const [method, level] of Object.entries(levels)) {
      target[method] = (...args) => this.emit(this.current(), level, util.format(...args));
    }
    target.dir = (value, options) =>
      this.emit(this.current(), 'log', util.inspect(value, { customInspect: false, ...options }));
    target.trace = (...args) => {
      const trace = { name: 'Trace', message: util.format(...args) };
      Error.captureStackTrace(trace, target.trace);
      this.emit(this.current(), 'error', trace.stack);
    };
  }
}

module.exports = { Capture, MAX_LINES, MAX_MSG_BYTES };
