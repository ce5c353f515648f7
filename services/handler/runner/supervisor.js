'use strict';
// Spawns and supervises the one child process (host.js) that runs tenant code, so that the
// protocol server never runs any. The child serves HTTP on a Unix socket; this module owns the
// keep-alive agent to it, the control calls (load, unload, logs), the liveness ping after a
// timeout, and the restart (with backoff) when the child dies or is killed for being wedged.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const { EventEmitter } = require('node:events');
const http = require('node:http');
const path = require('node:path');
const { HttpError } = require('./jsonhttp');
const { collect } = require('./logbuffer');

/** How long a child may take to answer a ping before it counts as wedged and is killed. */
const PING_TIMEOUT_MS = 200;
/**
 * The most a child that does not answer is given while it gets no CPU (a starved node), and
 * while a load is in flight (requiring a heavy SDK holds the event loop for a few hundred ms).
 */
const PING_PATIENCE_MS = 2000;
/** CPU a child may use in one ping window without answering before it counts as wedged. */
const WEDGED_CPU_MS = 20;
/** Length of a clock tick in /proc/<pid>/stat (USER_HZ is 100 on Linux). */
const CLOCK_TICK_MS = 10;
/** How long a child may take from spawn to listening on its socket. */
const START_TIMEOUT_MS = 10000;
/** Restarts are counted over this window to detect a crash loop. */
const CRASH_WINDOW_MS = 60000;
/** Restarts within the window that happen at once; later ones back off. */
const FREE_RESTARTS = 3;
/** First and longest backoff delay once restarts are no longer free. */
const MIN_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 10000;

/** A control call failed because the child died or was not running. */
class ChildGoneError extends Error {}

/** A control call got no answer in time. */
class ControlTimeout extends Error {}

/** CPU time (user + system) a process used so far, in ms, or undefined if /proc cannot tell. */
function cpuMs(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    // Fields after the ")" that closes the command name; utime and stime are the 12th and 13th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * CLOCK_TICK_MS;
  } catch {
    return undefined;
  }
}

/** One line on why a child process ended. */
function describeExit(code, signal) {
  if (signal === 'SIGABRT' || code === 134) return 'the runtime ran out of memory or aborted';
  if (signal === 'SIGKILL') return 'the runtime was killed (out of memory in the container?)';
  if (signal) return `the runtime was ended by ${signal}`;
  return `the runtime exited with code ${code}`;
}

/**
 * Supervises the host child process. Emits 'exit' with {code, signal, reason, culprit} each
 * time a child ends (culprit: the function blamed for a kill, if any). Not reentrant across
 * processes: one Supervisor per runner.
 */
class Supervisor extends EventEmitter {
  /**
   * @param {object} options
   * @param {string} options.socketPath  Unix socket the child listens on.
   * @param {number} options.heapMb      The child's --max-old-space-size.
   * @param {number} options.maxBody     Largest run body, passed on to the child.
   * @param {object} options.env         The child's whole environment.
   * @param {string} options.cwd         The child's working directory.
   * @param {Function} options.log       log(level, msg, fields) of the runner.
   * @param {import('./logbuffer').LogBuffer} [options.logs]  Gets every child's output; without
   *   it the child's stdout and stderr are the runner's and its log lines are not kept.
   * @param {string} [options.hostPath]  Entry of the child (host.js).
   */
  constructor({ socketPath, heapMb, maxBody, env, cwd, log, logs, hostPath = path.join(__dirname, 'host.js') }) {
    super();
    this.socketPath = socketPath;
    this.heapMb = heapMb;
    this.maxBody = maxBody;
    this.env = env;
    this.cwd = cwd;
    this.log = log;
    this.logs = logs || null;
    this.hostPath = hostPath;
    /** Keep-alive agent to the current child; replaced on every spawn. */
    this.agent = null;
    this.child = null;
    this.listening = false; // the child's socket answers (reload may still be running)
    this.isReady = false; // listening and every function reloaded
    this.suspect = false; // a liveness ping is pending: hold new calls until it answers
    this.stopping = false;
    this.pinging = false;
    this.controls = 0; // control calls in flight
    /** Answers received from the child; the protocol counts them, the liveness check reads them. */
    this.answers = 0;
    this.killReason = undefined;
    this.culprit = undefined;
    this.crashes = [];
    this.waiters = new Set();
    this.restartTimer = null;
    this.onStart = async () => {};
  }

  /** True when calls can be forwarded to the child. */
  get ready() {
    return this.isReady && !this.suspect;
  }

  /**
   * Spawns the first child. `onStart` runs after every spawn once the child listens and before
   * calls are let through (the protocol reloads its functions there); it may use control().
   */
  start(onStart) {
    if (onStart) this.onStart = onStart;
    this.spawnChild();
  }

  /** Resolves when the child is ready; rejects with a 503 HttpError after `ms`. */
  whenReady(ms) {
    if (this.ready) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = { resolve };
      waiter.timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new HttpError(503, 'runtime_unavailable', 'the function runtime is restarting; try again'));
      }, ms);
      this.waiters.add(waiter);
    });
  }

  /** Spawns a child and wires its ready line and exit. */
  spawnChild() {
    this.restartTimer = null;
    const args = [`--max-old-space-size=${this.heapMb}`, this.hostPath, this.socketPath, String(this.maxBody), '4'];
    // stdin: a pipe never written, whose EOF tells the child the parent is gone.
    // fd 3: the child's "ready" line. fd 4: its captured log lines (JSON). stdout and stderr:
    // raw output of tenant code and the runtime's fatal messages. All three go to the log
    // stream (this.logs), never to the runner's own stdout.
    // detached: the child leads its own process group, so that killing the group also ends
    // whatever tenant code spawned (a spawn loop would otherwise leave orphans behind).
    const out = this.logs ? 'pipe' : 'inherit';
    const child = spawn(process.execPath, args, {
      env: this.env,
      cwd: this.cwd,
      stdio: ['pipe', out, out, 'pipe', 'pipe'],
      detached: true,
    });
    if (this.logs) collect(this.logs, { pipe: child.stdio[4], stdout: child.stdout, stderr: child.stderr });
    else child.stdio[4].resume();
    this.child = child;
    this.agent = new http.Agent({ keepAlive: true, maxFreeSockets: 1024, scheduling: 'lifo' });
    this.listening = false;
    this.killReason = undefined;
    this.culprit = undefined;
    this.pinging = false;
    this.suspect = false;

    const startTimer = setTimeout(() => this.kill(child, 'the runtime did not start in time'), START_TIMEOUT_MS);
    let said = '';
    child.stdio[3].on('data', (chunk) => {
      said += chunk;
      if (!this.listening && this.child === child && said.includes('ready\n')) {
        clearTimeout(startTimer);
        this.listening = true;
        this.afterStart(child);
      }
    });
    child.stdio[3].on('error', () => {});
    child.stdin.on('error', () => {});
    let ended = false;
    const onEnd = (code, signal) => {
      if (ended) return;
      ended = true;
      clearTimeout(startTimer);
      this.onExit(child, code, signal);
    };
    child.once('exit', onEnd);
    child.once('exit', () => killGroup(child)); // reap what tenant code left running
    child.once('error', (err) => {
      this.log('error', 'runtime failed to start', { error: err.message });
      onEnd(null, null);
    });
  }

  /** Runs once the child listens: the start hook (reload), then lets calls through. */
  async afterStart(child) {
    try {
      // Opens the first keep-alive connection and warms this side's client code paths.
      await this.control('GET', '/_ctl/ping', undefined, START_TIMEOUT_MS);
    } catch {
      this.kill(child, 'the runtime did not answer after starting'); // its exit restarts it
      return;
    }
    try {
      await this.onStart();
    } catch (err) {
      this.log('error', 'runtime start hook failed', { error: err.message });
    }
    if (this.child !== child || !this.listening) return; // died meanwhile; the next spawn retries
    this.isReady = true;
    this.log('info', 'runtime ready', { pid: child.pid });
    this.release();
  }

  /** Lets the calls waiting in whenReady() through, if the child is ready. */
  release() {
    if (!this.ready) return;
    for (const waiter of this.waiters) {
      clearTimeout(waiter.timer);
      waiter.resolve();
    }
    this.waiters.clear();
  }

  /** Handles the end of a child: fails what was in flight, schedules the restart. */
  onExit(child, code, signal) {
    if (this.child !== child) return;
    this.child = null;
    this.isReady = false;
    this.listening = false;
    this.suspect = false;
    this.agent.destroy(); // calls in flight on it fail now, and get 502 from the protocol
    const reason = this.killReason || describeExit(code, signal);
    const culprit = this.culprit;
    this.emit('exit', { code, signal, reason, culprit });
    if (this.stopping) return;
    const delay = this.backoff();
    this.log('warn', 'runtime exited; restarting', { code, signal, reason, culprit, delayMs: delay });
    this.restartTimer = setTimeout(() => this.spawnChild(), delay);
  }

  /** Delay before the next restart: none for the first few in a window, then doubling. */
  backoff() {
    const now = Date.now();
    this.crashes = this.crashes.filter((at) => now - at < CRASH_WINDOW_MS);
    this.crashes.push(now);
    const beyond = this.crashes.length - FREE_RESTARTS;
    if (beyond <= 0) return 0;
    return Math.min(MAX_BACKOFF_MS, MIN_BACKOFF_MS * 2 ** (beyond - 1));
  }

  /** SIGKILLs `child` if it is still the current one, recording why (and whom to blame). */
  kill(child, reason, culprit) {
    if (this.child !== child || child.exitCode !== null || child.signalCode !== null) return;
    this.killReason = reason;
    this.culprit = culprit;
    killGroup(child);
  }

  /**
   * Pings the child on a fresh connection (not queued behind busy keep-alive sockets) to tell
   * "slow but alive" from "wedged in a synchronous loop" after a timeout. Every PING_TIMEOUT_MS
   * without an answer the child is judged: if it answered other calls meanwhile (`answers`
   * grew) its event loop turns and it is left alone; if it burnt CPU without answering anything
   * it is wedged and is SIGKILLed; if it got no CPU (a starved node) it is given more time, up
   * to PING_PATIENCE_MS, so that a busy machine does not cost a tenant its calls in flight.
   * During a load (a heavy require legitimately holds the loop) CPU use proves nothing, so
   * only PING_PATIENCE_MS applies. New calls wait for the outcome rather than queue up behind
   * a loop that is about to be killed. One ping at a time.
   */
  checkAlive(reason, culprit) {
    const child = this.child;
    if (!child || !this.listening || this.pinging) return;
    this.pinging = true;
    this.suspect = true;
    const started = Date.now();
    let cpuBefore = cpuMs(child.pid);
    let answersBefore = this.answers;
    let timer;
    const settle = () => {
      clearTimeout(timer);
      req.destroy();
      this.pinging = false;
      if (this.child !== child) return;
      this.suspect = false;
      this.release();
    };
    const judge = () => {
      if (this.child !== child) return settle();
      if (this.answers !== answersBefore) return settle(); // busy, not stuck
      const cpuNow = cpuMs(child.pid);
      const waited = Date.now() - started;
      const loading = this.controls > 0;
      // Answering a ping takes well under a ms of CPU: a child that got WEDGED_CPU_MS and
      // still did not answer (nor anything else) is running something that does not yield.
      const spinning = cpuBefore === undefined || cpuNow === undefined || cpuNow - cpuBefore >= WEDGED_CPU_MS;
      if (waited >= PING_PATIENCE_MS || (!loading && spinning)) {
        req.destroy();
        this.pinging = false;
        this.kill(child, reason, culprit);
        return;
      }
      cpuBefore = cpuNow;
      answersBefore = this.answers;
      timer = setTimeout(judge, PING_TIMEOUT_MS);
    };
    const req = http.request({ socketPath: this.socketPath, path: '/_ctl/ping', agent: false });
    timer = setTimeout(judge, PING_TIMEOUT_MS);
    req.once('response', (res) => {
      res.resume();
      settle();
    });
    req.once('error', () => {
      clearTimeout(timer);
      this.pinging = false; // the child is dead already: its exit handler restarts it
    });
    req.end();
  }

  /**
   * A JSON control call to the child: resolves {status, body}. Rejects with ChildGoneError if
   * the child is not running or dies, ControlTimeout after `timeoutMs`.
   */
  control(method, urlPath, body, timeoutMs) {
    if (!this.listening) return Promise.reject(new ChildGoneError('the runtime is not running'));
    this.controls++;
    const call = new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const headers = payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {};
      const req = http.request({ socketPath: this.socketPath, agent: this.agent, method, path: urlPath, headers });
      const timer = setTimeout(() => req.destroy(new ControlTimeout(`no answer within ${timeoutMs} ms`)), timeoutMs);
      const failed = (err) => {
        clearTimeout(timer);
        reject(err instanceof ControlTimeout ? err : new ChildGoneError(err.message));
      };
      req.once('error', failed);
      req.once('response', (res) => {
        const chunks = [];
        res.on('data', (chunk) => chunks.push(chunk));
        res.once('error', failed);
        res.once('end', () => {
          clearTimeout(timer);
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch {
            parsed = undefined;
          }
          resolve({ status: res.statusCode, body: parsed });
        });
      });
      req.end(payload);
    });
    const done = () => this.controls--;
    call.then(done, done);
    return call;
  }

  /** Stops the child: SIGTERM (it drains its calls), SIGKILL after `ms`. No restart follows. */
  stop(ms) {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    const child = this.child;
    if (!child) return Promise.resolve();
    return new Promise((resolve) => {
      const killer = setTimeout(() => killGroup(child), ms);
      child.once('exit', () => {
        clearTimeout(killer);
        resolve();
      });
      child.kill('SIGTERM');
    });
  }
}

module.exports = { Supervisor, ChildGoneError, ControlTimeout, PING_TIMEOUT_MS };

/** SIGKILLs the child's whole process group (the child and anything tenant code spawned). */
function killGroup(child) {
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // The group is gone already.
  }
}
