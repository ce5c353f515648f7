'use strict';
// The runner's log stream, kept in the parent process: every line the tenant's functions log
// (console.*, uncaught errors, failures), raw output of the child, and the runner's own lines
// (timeouts, restarts), each with a sequence number. Bounded in lines, in bytes per line and in
// bytes overall; the oldest lines go first. The handler reads it with
// GET /_fnhook/logs?after=<seq>&wait=<s> and ships the lines, so Nomad need not collect the
// runner's stdout (no log shipper process per runner).

/** Levels a line may have; anything else from the child becomes "log". */
const LEVELS = new Set(['log', 'info', 'warn', 'error']);
/** Where a line comes from (see README.md). */
const SOURCES = new Set(['function', 'stdout', 'stderr', 'runner']);
/** Longest function name, request id and timestamp taken from the child. */
const MAX_FIELD = 200;

/** Cuts `text` to `max` bytes of UTF-8 (a cut multi-byte character becomes U+FFFD). */
function cut(text, max) {
  if (text.length * 3 <= max || Buffer.byteLength(text) <= max) return text;
  return Buffer.from(text).subarray(0, max).toString('utf8') + ' [truncated]';
}

/** A short string field, or null. */
function field(value) {
  return typeof value === 'string' && value.length > 0 ? value.slice(0, MAX_FIELD) : null;
}

/**
 * A bounded, sequenced buffer of log lines with long-polling readers. Sequence numbers start
 * at 1 and have no holes except for lines that were lost: lines the child had to drop (its
 * channel to this process was full) and unreadable ones still take a number each, so a reader
 * sees every loss as a gap and is told how many (`missed`). Single process, not thread-safe.
 */
class LogBuffer {
  /**
   * @param {object} [options]
   * @param {number} [options.maxLines]      most lines kept (the oldest are evicted)
   * @param {number} [options.maxBytes]      most bytes kept, all lines together
   * @param {number} [options.maxLineBytes]  longest message kept, in bytes (longer ones are cut)
   * @param {Function} [options.now]         clock, returns an ISO time string
   */
  constructor({ maxLines = 1000, maxBytes = 1 << 20, maxLineBytes = 4096, now = () => new Date().toISOString() } = {}) {
    this.maxLines = maxLines;
    this.maxBytes = maxBytes;
    this.maxLineBytes = maxLineBytes;
    this.now = now;
    /** Kept lines, oldest first, from index `start`: {seq, text (the line as JSON), bytes, at}. */
    this.entries = [];
    this.start = 0;
    this.bytes = 0;
    /** The newest sequence number given out (a line or a lost one). */
    this.seq = 0;
    /** Lines lost before they were kept (dropped by the child, unreadable). */
    this.dropped = 0;
    /** Lines evicted to make room, read or not. */
    this.evicted = 0;
    this.waiters = new Set();
    this.closed = false;
  }

  /**
   * Adds one line and returns its sequence number. `line`: {source, level, fn?, version?,
   * requestId?, msg, ts?, attrs?}; fields are checked and cut here, so a line made up by
   * tenant code (which can write to the child's channel) cannot break the stream.
   */
  add(line) {
    const record = {
      seq: ++this.seq,
      ts: typeof line.ts === 'string' && line.ts.length <= 40 ? line.ts : this.now(),
      source: SOURCES.has(line.source) ? line.source : 'function',
      level: LEVELS.has(line.level) ? line.level : 'log',
      fn: field(line.fn),
      version: Number.isSafeInteger(line.version) && line.version > 0 ? line.version : null,
      requestId: field(line.requestId),
      msg: cut(typeof line.msg === 'string' ? line.msg : String(line.msg), this.maxLineBytes),
    };
    if (line.attrs && typeof line.attrs === 'object' && Object.keys(line.attrs).length > 0) record.attrs = line.attrs;
    let text;
    try {
      text = JSON.stringify(record);
    } catch {
      delete record.attrs; // a runner line with a value JSON cannot hold
      text = JSON.stringify(record);
    }
    const bytes = Buffer.byteLength(text);
    this.entries.push({ seq: record.seq, text, bytes, at: Date.now() });
    this.bytes += bytes;
    while (this.entries.length - this.start > this.maxLines || (this.bytes > this.maxBytes && this.entries.length - this.start > 1)) {
      this.bytes -= this.entries[this.start].bytes;
      this.entries[this.start++] = undefined;
      this.evicted++;
    }
    if (this.start > 1024 && this.start * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.start);
      this.start = 0;
    }
    this.wake();
    return record.seq;
  }

  /** Counts `n` lines lost before they could be kept: they take sequence numbers, no room. */
  lose(n) {
    if (!(n > 0)) return;
    this.seq += n;
    this.dropped += n;
    this.wake();
  }

  /**
   * Lines after sequence number `after`, oldest first: at most `limit` lines and about
   * `maxBytes` of JSON (always at least one line when there is one). Returns
   * {lines: [JSON texts], next, missed}: `next` is the cursor for the following read, and
   * `missed` counts the numbers in (after, next] whose lines are gone (evicted or lost).
   */
  read(after, limit = 500, maxBytes = 1 << 20) {
    const lines = [];
    let i = this.firstAfter(after);
    let next = this.seq;
    let size = 0;
    for (; i < this.entries.length; i++) {
      const entry = this.entries[i];
      if (lines.length >= limit || (lines.length > 0 && size + entry.bytes > maxBytes)) {
        next = entry.seq - 1;
        break;
      }
      lines.push(entry.text);
      size += entry.bytes + 1;
    }
    if (next < after) next = after;
    return { lines, next, missed: next - after - lines.length };
  }

  /** Index in `entries` of the first kept line with a sequence number above `after`. */
  firstAfter(after) {
    let lo = this.start;
    let hi = this.entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.entries[mid].seq <= after) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * Resolves when `need` sequence numbers above `after` exist (1: any new line), when `ms` have
   * passed, when the buffer is closed, or when `signal` aborts; never rejects.
   */
  wait(after, ms, signal, need = 1) {
    if (this.seq - after >= need || this.closed || ms <= 0 || (signal && signal.aborted)) return Promise.resolve();
    return new Promise((resolve) => {
      const waiter = { after, need, resolve: null };
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
        if (signal) signal.removeEventListener('abort', done);
        resolve();
      };
      waiter.resolve = done;
      const timer = setTimeout(done, ms);
      if (signal) signal.addEventListener('abort', done);
      this.waiters.add(waiter);
    });
  }

  /** Wakes the readers whose wait is over. */
  wake() {
    for (const waiter of this.waiters) if (this.seq - waiter.after >= waiter.need) waiter.resolve();
  }

  /**
   * Lets the lines after `after` gather for a moment, so that a reader of a chatty runner gets
   * them in batches rather than one request per line: resolves once the oldest of them has
   * been kept for `lingerMs`, or `need` of them are there (or on close or abort).
   */
  linger(after, lingerMs, need, signal) {
    const i = this.firstAfter(after);
    if (i >= this.entries.length) return Promise.resolve();
    const left = this.entries[i].at + lingerMs - Date.now();
    return this.wait(after, left, signal, need);
  }

  /** Wakes every waiting reader, now and from now on (the runner is shutting down). */
  close() {
    this.closed = true;
    for (const waiter of this.waiters) waiter.resolve();
  }

  /** Counters for the state: {seq, kept, dropped, evicted}. */
  stats() {
    return { seq: this.seq, kept: this.entries.length - this.start, dropped: this.dropped, evicted: this.evicted };
  }
}

/**
 * Splits a readable stream into lines and calls `onLine(text)` for each (without the newline).
 * A line longer than `maxBytes` is passed on cut (then `onLine(text, true)`), and the rest up to
 * the next newline is skipped. Works on strings: the stream gets utf8 encoding.
 */
function splitLines(stream, maxBytes, onLine) {
  let pending = '';
  let skipping = false;
  stream.setEncoding('utf8');
  stream.on('data', (chunk) => {
    let from = 0;
    for (;;) {
      const nl = chunk.indexOf('\n', from);
      if (nl < 0) break;
      const piece = chunk.slice(from, nl);
      from = nl + 1;
      if (skipping) {
        skipping = false;
        pending = '';
        continue;
      }
      const line = pending + piece;
      pending = '';
      if (line.length * 3 > maxBytes && Buffer.byteLength(line) > maxBytes) onLine(cut(line, maxBytes), true);
      else onLine(line, false);
    }
    if (skipping) return;
    pending += chunk.slice(from);
    if (pending.length > maxBytes) {
      onLine(cut(pending, maxBytes), true);
      pending = '';
      skipping = true;
    }
  });
  stream.on('end', () => {
    if (pending && !skipping) onLine(pending, false);
    pending = '';
  });
  stream.on('error', () => {});
}

module.exports = { LogBuffer, splitLines, LEVELS, SOURCES };

/** Longest JSON line accepted from the child's log pipe (a 4 KiB message escapes to ~25 KiB). */
const MAX_PIPE_LINE = 64 * 1024;

/**
 * Feeds a host child's output into `logs`: its log pipe (JSON lines from capture.js, taken as
 * source "function") and its stdout and stderr (raw text from tenant code that writes there,
 * and the runtime's own fatal messages, e.g. V8's out-of-memory report), one line each.
 */
function collect(logs, { pipe, stdout, stderr }) {
  if (pipe) {
    splitLines(pipe, MAX_PIPE_LINE, (text, cutOff) => {
      let record;
      if (!cutOff) {
        try {
          record = JSON.parse(text);
        } catch {}
      }
      if (!record || typeof record !== 'object' || Array.isArray(record)) return logs.lose(1);
      if (Number.isSafeInteger(record.lost) && record.lost > 0) logs.lose(record.lost);
      logs.add({ ts: record.ts, level: record.level, fn: record.fn, version: record.version, requestId: record.requestId, msg: record.msg, source: 'function' });
    });
  }
  if (stdout) splitLines(stdout, logs.maxLineBytes, (text) => logs.add({ source: 'stdout', level: 'log', msg: text }));
  if (stderr) splitLines(stderr, logs.maxLineBytes, (text) => logs.add({ source: 'stderr', level: 'error', msg: text }));
}

module.exports.collect = collect;
