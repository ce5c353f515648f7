'use strict';
// The log stream's buffer on its own: bounds, drop counting, order, the after= cursor and the
// long-poll wake-up; and the child's end of the log pipe, which must never block tenant code.

const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');
const { PassThrough } = require('node:stream');
const { describe, it } = require('node:test');
const { LogBuffer, splitLines, collect } = require('../logbuffer');

/** Adds `n` function lines "0".."n-1" to `logs`. */
function fill(logs, n, from = 0) {
  for (let i = from; i < from + n; i++) logs.add({ source: 'function', level: 'log', fn: 'hello', version: 1, msg: String(i) });
}

/** The parsed lines of a read. */
function read(logs, after, limit, maxBytes) {
  const out = logs.read(after, limit, maxBytes);
  return { ...out, lines: out.lines.map((text) => JSON.parse(text)) };
}

describe('log buffer', () => {
  it('numbers lines from 1 in order and reads them after a cursor', () => {
    const logs = new LogBuffer();
    fill(logs, 5);
    const all = read(logs, 0);
    assert.deepEqual(all.lines.map((l) => l.seq), [1, 2, 3, 4, 5]);
    assert.deepEqual(all.lines.map((l) => l.msg), ['0', '1', '2', '3', '4']);
    assert.equal(all.next, 5);
    assert.equal(all.missed, 0);
    const line = all.lines[0];
    assert.deepEqual(Object.keys(line).sort(), ['fn', 'level', 'msg', 'requestId', 'seq', 'source', 'ts', 'version']);
    assert.ok(!Number.isNaN(Date.parse(line.ts)));

    const rest = read(logs, 3);
    assert.deepEqual(rest.lines.map((l) => l.seq), [4, 5]);
    assert.deepEqual(read(logs, 5), { lines: [], next: 5, missed: 0 });
    fill(logs, 1, 5);
    assert.deepEqual(read(logs, 5).lines.map((l) => l.msg), ['5']);
  });

  it('keeps at most maxLines: the oldest go, and a reader behind is told how many it missed', () => {
    const logs = new LogBuffer({ maxLines: 10 });
    fill(logs, 25);
    const all = read(logs, 0);
    assert.deepEqual(all.lines.map((l) => l.seq), [16, 17, 18, 19, 20, 21, 22, 23, 24, 25]);
    assert.equal(all.missed, 15);
    assert.equal(all.next, 25);
    assert.equal(read(logs, 20).missed, 0, 'a reader that kept up missed nothing');
    assert.deepEqual(logs.stats(), { seq: 25, kept: 10, dropped: 0, evicted: 15 });
    fill(logs, 3000, 25); // compaction of the array keeps the order and the lookups right
    assert.deepEqual(read(logs, 3020).lines.map((l) => l.seq), [3021, 3022, 3023, 3024, 3025]);
  });

  it('cuts a line to maxLineBytes and keeps at most maxBytes overall', () => {
    const logs = new LogBuffer({ maxLineBytes: 100, maxBytes: 2000 });
    logs.add({ source: 'function', level: 'info', msg: 'é'.repeat(300) });
    const [long] = read(logs, 0).lines;
    assert.ok(Buffer.byteLength(long.msg) <= 100 + ' [truncated]'.length, `${Buffer.byteLength(long.msg)} bytes`);
    assert.match(long.msg, /^é+ \[truncated\]$/);
    fill(logs, 100);
    assert.ok(logs.bytes <= 2000, `${logs.bytes} bytes kept`);
    const all = read(logs, 0);
    assert.equal(all.lines.at(-1).msg, '99');
    assert.equal(all.missed + all.lines.length, 101);
  });

  it('counts lines lost before they were kept as gaps in the numbering', () => {
    const logs = new LogBuffer();
    fill(logs, 2);
    logs.lose(3);
    fill(logs, 1, 2);
    const all = read(logs, 0);
    assert.deepEqual(all.lines.map((l) => l.seq), [1, 2, 6]);
    assert.equal(all.missed, 3);
    assert.equal(logs.dropped, 3);
    assert.equal(read(logs, 2).missed, 3);
    logs.lose(2); // lost at the end: the cursor moves past them
    assert.deepEqual(read(logs, 6), { lines: [], next: 8, missed: 2 });
  });

  it('answers at most `limit` lines and about maxBytes, with the cursor where it stopped', () => {
    const logs = new LogBuffer();
    fill(logs, 10);
    const first = read(logs, 0, 4);
    assert.deepEqual(first.lines.map((l) => l.seq), [1, 2, 3, 4]);
    assert.equal(first.next, 4);
    assert.deepEqual(read(logs, first.next, 4).lines.map((l) => l.seq), [5, 6, 7, 8]);
    const small = read(logs, 0, 100, 1); // always at least one line
    assert.deepEqual(small.lines.map((l) => l.seq), [1]);
    assert.equal(small.next, 1);
    assert.equal(small.missed, 0);
  });

  it('checks the fields of a line: a made-up line cannot break the stream', () => {
    const logs = new LogBuffer();
    logs.add({ source: 'kernel', level: 'fatal', fn: 'x'.repeat(500), version: -1, requestId: 7, msg: { a: 1 }, ts: 'y'.repeat(100) });
    const [line] = read(logs, 0).lines;
    assert.equal(line.source, 'function');
    assert.equal(line.level, 'log');
    assert.equal(line.fn.length, 200);
    assert.equal(line.version, null);
    assert.equal(line.requestId, null);
    assert.equal(line.msg, '[object Object]');
    assert.ok(!Number.isNaN(Date.parse(line.ts)));
    const circular = {};
    circular.self = circular;
    logs.add({ source: 'runner', level: 'info', msg: 'odd attrs', attrs: circular });
    assert.equal(read(logs, 1).lines[0].msg, 'odd attrs');
  });

  it('wakes a waiting reader when a line comes, and not before', async () => {
    const logs = new LogBuffer();
    fill(logs, 1);
    let woke = false;
    const waiting = logs.wait(1, 5000).then(() => (woke = true));
    await new Promise((resolve) => setTimeout(resolve, 30));
    assert.equal(woke, false);
    const started = Date.now();
    fill(logs, 1, 1);
    await waiting;
    assert.ok(Date.now() - started < 100);
    assert.equal(logs.waiters.size, 0);
    // A loss wakes it too: the reader learns about the gap.
    const again = logs.wait(2, 5000);
    logs.lose(1);
    await again;
  });

  it('lets new lines gather for a moment, unless enough of them are there', async () => {
    const logs = new LogBuffer();
    fill(logs, 1);
    let started = Date.now();
    await logs.linger(0, 150, 100);
    assert.ok(Date.now() - started >= 140, 'waited until the first line was 150 ms old');
    started = Date.now();
    await logs.linger(0, 150, 100); // that line is old enough now
    assert.ok(Date.now() - started < 50);

    started = Date.now();
    fill(logs, 1, 1);
    const gathering = logs.linger(1, 5000, 3);
    fill(logs, 2, 2); // three new lines: enough
    await gathering;
    assert.ok(Date.now() - started < 500);
    await logs.linger(4, 5000, 3); // nothing after the cursor: nothing to gather
  });

  it('ends a wait at its timeout, on abort, and on close', async () => {
    const logs = new LogBuffer();
    let started = Date.now();
    await logs.wait(0, 150);
    assert.ok(Date.now() - started >= 140, 'waited its time');
    const gone = new AbortController();
    started = Date.now();
    const aborted = logs.wait(0, 5000, gone.signal);
    gone.abort();
    await aborted;
    const closing = logs.wait(0, 5000);
    logs.close();
    await closing;
    await logs.wait(0, 5000); // closed: no more waiting
    assert.ok(Date.now() - started < 1000);
    assert.equal(logs.waiters.size, 0);
  });
});

describe('log pipe', () => {
  it('splits a stream into lines, cutting an overlong one and skipping its rest', async () => {
    const stream = new PassThrough();
    const got = [];
    splitLines(stream, 10, (text, cutOff) => got.push([text, cutOff]));
    stream.write('one\ntw');
    stream.write('o\n' + 'x'.repeat(25));
    stream.write('yyy\nthree\nlast');
    stream.end();
    await new Promise((resolve) => stream.once('end', resolve));
    assert.deepEqual(got, [
      ['one', false],
      ['two', false],
      ['x'.repeat(10) + ' [truncated]', true],
      ['three', false],
      ['last', false],
    ]);
  });

  it('takes the child lines, counts unreadable ones and the ones the child dropped', async () => {
    const logs = new LogBuffer();
    const pipe = new PassThrough();
    const stderr = new PassThrough();
    collect(logs, { pipe, stderr });
    pipe.write(JSON.stringify({ ts: new Date().toISOString(), level: 'warn', fn: 'hello', version: 2, requestId: 'r1', msg: 'hi' }) + '\n');
    pipe.write('not json\n');
    pipe.write(JSON.stringify({ level: 'log', fn: 'hello', msg: 'after a loss', lost: 4, source: 'runner' }) + '\n');
    stderr.write('FATAL ERROR: out of memory\n');
    await new Promise((resolve) => setImmediate(resolve));
    const { lines, missed } = read(logs, 0);
    assert.deepEqual(
      lines.map((l) => [l.seq, l.source, l.level, l.fn, l.version, l.requestId, l.msg]),
      [
        [1, 'function', 'warn', 'hello', 2, 'r1', 'hi'],
        [7, 'function', 'log', 'hello', null, null, 'after a loss'],
        [8, 'stderr', 'error', null, null, null, 'FATAL ERROR: out of memory'],
      ],
    );
    assert.equal(missed, 5, 'one unreadable line and four the child dropped');
    assert.equal(logs.dropped, 5);
  });

  it('never blocks tenant code when the parent does not read: lines are dropped and counted', async () => {
    // The child logs 200k lines (~30 MB) into a pipe nobody reads, then says how long it took.
    const script = `
      const { Capture, PipeSink } = require(${JSON.stringify(path.join(__dirname, '..', 'capture.js'))});
      const sink = new PipeSink(4);
      const capture = new Capture(sink);
      capture.install(console);
      const started = Date.now();
      let kept = 0;
      capture.run({ fn: 'flood', version: 1 }, () => {
        for (let i = 0; i < 200000; i++) console.log('line', i, 'x'.repeat(100));
      });
      process.stdout.write(JSON.stringify({ ms: Date.now() - started, lost: sink.lost }) + '\\n');
      process.exit(0);
    `;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit', 'ignore', 'pipe'] });
    child.stdio[4].pause(); // the parent is busy: it reads nothing
    let out = '';
    child.stdout.on('data', (chunk) => (out += chunk));
    await new Promise((resolve) => child.once('exit', resolve));
    const { ms, lost } = JSON.parse(out);
    assert.ok(lost > 100000, `${lost} lines dropped`);
    assert.ok(ms < 10000, `logging took ${ms} ms`);
  });
});
