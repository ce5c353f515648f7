'use strict';
// Console capture for the host (child) process: every console call made by tenant code is
// attributed to the function (and version and request) whose load or invocation it happened
// in, kept in that function's ring buffer for GET /_fnhook/logs/{name}, and sent to the parent
// over a pipe (fd 4) for the runner's log stream (GET /_fnhook/logs?after=).

const { AsyncLocalStorage } = require('node:async_hooks');
const net = require('node:net');
const util = require('node:util');

/** Number of lines kept per function. */
const MAX_LINES = 200;
/** Longest message kept, in bytes of UTF-8; longer ones are cut. */
const MAX_MSG_BYTES = 4096;
/** Bytes the pipe to the parent may hold unsent before new lines are dropped (and counted). */
const MAX_QUEUED_BYTES = 256 * 1024;

/** Cuts `msg` to MAX_MSG_BYTES of UTF-8 (a cut multi-byte character becomes U+FFFD). */
function truncate(msg) {
  // A UTF-16 code unit is at most 3 bytes of UTF-8, so short strings need no byte count.
  if (msg.length * 3 <= MAX_MSG_BYTES || Buffer.byteLength(msg) <= MAX_MSG_BYTES) return msg;
  return Buffer.from(msg).subarray(0, MAX_MSG_BYTES).toString('utf8') + ' [truncated]';
}

/**
 * The child's end of the log pipe to the parent: one JSON line per log line. Writing never
 * blocks tenant code: the pipe is non-blocking, and while more than `maxQueued` bytes wait for
 * the parent to read them, lines are dropped and counted; the next line that goes through
 * carries the count as `lost`, so the parent's stream shows the gap.
 */
class PipeSink {
  constructor(fd, maxQueued = MAX_QUEUED_BYTES) {
    this.maxQueued = maxQueued;
    this.lost = 0;
    this.closed = false;
    this.socket = new net.Socket({ fd, readable: false, writable: true });
    this.socket.on('error', () => (this.closed = true)); // the parent is gone: drop everything
    this.socket.unref(); // never what keeps the child alive
  }

  /** Sends `record` ({ts, level, fn, version, requestId, msg}); false when it was dropped. */
  write(record) {
    if (this.closed || this.socket.writableLength > this.maxQueued) {
      this.lost++;
      return false;
    }
    if (this.lost > 0) {
      record.lost = this.lost;
      this.lost = 0;
    }
    this.socket.write(JSON.stringify(record) + '\n');
    return true;
  }
}

/**
 * Captures console output per function. Attribution uses AsyncLocalStorage, so output from
 * concurrent async invocations (timers, promises, I/O callbacks started by a call) lands in the
 * buffer of the function that started them. The store is the scope {fn, version, requestId}
 * (requestId only for calls). Output outside any function goes to the stream with fn null.
 */
class Capture {
  /** `sink.write(record)` receives each line (a PipeSink in the host; none: ring buffers only). */
  constructor(sink) {
    this.sink = sink || null;
    this.storage = new AsyncLocalStorage();
    /** @type {Map<string, Array<{ts: string, level: string, msg: string}>>} */
    this.buffers = new Map();
  }

  /** Runs `callback` with console output attributed to `scope` ({fn, version, requestId?}). */
  run(scope, callback) {
    return this.storage.run(scope, callback);
  }

  /** The scope the current async context belongs to, or undefined. */
  current() {
    return this.storage.getStore();
  }

  /** Records one line for `scope` (or for no function, if scope is undefined). */
  emit(scope, level, msg) {
    msg = truncate(String(msg));
    const ts = new Date().toISOString();
    const fn = scope ? scope.fn : undefined;
    if (this.sink) {
      this.sink.write({ ts, level, fn: fn ?? null, version: scope?.version ?? null, requestId: scope?.requestId ?? null, msg });
    }
    if (fn !== undefined) this.keep(fn, level, msg, ts);
  }

  /** Adds a line to the ring buffer of function `name` only (not to the stream). */
  note(name, level, msg) {
    this.keep(name, level, truncate(String(msg)), new Date().toISOString());
  }

  /** Adds an already cut line to the ring buffer of function `name`. */
  keep(name, level, msg, ts) {
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

module.exports = { Capture, PipeSink, MAX_LINES, MAX_MSG_BYTES, MAX_QUEUED_BYTES };
