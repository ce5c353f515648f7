'use strict';
// Entry of the fnhook runner: `node main.js`, started by Nomad in a warm container. Reads its
// configuration from the environment once, scrubs that environment, starts the supervisor of
// the child that hosts tenant code and the protocol server, and shuts both down on SIGTERM.

const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { LogBuffer } = require('./logbuffer');
const { Protocol } = require('./protocol');
const { Supervisor } = require('./supervisor');

/** How long SIGTERM waits for in-flight calls before the runner exits anyway. */
const SHUTDOWN_MS = 5000;
/** Longest Unix socket path Linux accepts (sun_path is 108 bytes with its NUL). */
const MAX_SOCKET_PATH = 107;

/** Parses a non-negative integer variable, or returns `fallback` when unset. */
function intVar(env, name, fallback, min = 0) {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < min) throw new Error(`${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`);
  return value;
}

/**
 * Reads the runner's configuration from `env` (see README.md). Throws with a one-line
 * message on a missing token or a malformed value.
 */
function readConfig(env) {
  const token = env.FNHOOK_RUNNER_TOKEN;
  if (!token) throw new Error('FNHOOK_RUNNER_TOKEN is required');
  const port = intVar(env, 'FNHOOK_RUNNER_PORT', 8080);
  if (port > 65535) throw new Error('FNHOOK_RUNNER_PORT must be a port number');
  return {
    token,
    port,
    host: env.FNHOOK_RUNNER_HOST || '0.0.0.0',
    modulesDir: path.resolve(env.FNHOOK_RUNNER_MODULES || '/modules'),
    workDir: path.resolve(env.FNHOOK_RUNNER_WORKDIR || path.join(env.NOMAD_TASK_DIR || os.tmpdir(), 'fnhook')),
    maxBody: intVar(env, 'FNHOOK_RUNNER_MAX_BODY', 6291456, 1),
    heapMb: intVar(env, 'FNHOOK_RUNNER_HEAP_MB', 256, 16),
    maxFunctions: intVar(env, 'FNHOOK_RUNNER_MAX_FUNCTIONS', 100, 1),
    logLines: intVar(env, 'FNHOOK_RUNNER_LOG_LINES', 1000, 10),
    logBytes: intVar(env, 'FNHOOK_RUNNER_LOG_BYTES', 1048576, 65536),
  };
}

/**
 * The runner's own log: each line goes to the log stream as source "runner" (with the function
 * and version when the fields name them), not to stdout, which Nomad need not collect.
 */
function runnerLog(logs) {
  return (level, msg, fields = {}) => {
    const { function: fn, version, ...attrs } = fields;
    logs.add({ source: 'runner', level, msg, fn, version, attrs });
  };
}

/** Starts the runner with `config`; resolves once it listens. */
async function run(config) {
  const logs = new LogBuffer({ maxLines: config.logLines, maxBytes: config.logBytes });
  const log = runnerLog(logs);
  const homeDir = path.join(config.workDir, 'home');
  const functionsDir = path.join(config.workDir, 'functions');
  const socketPath = path.join(config.workDir, 'host.sock');
  if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
    throw new Error(`FNHOOK_RUNNER_WORKDIR is too long for a Unix socket path: ${socketPath}`);
  }
  // A runner never restarts in place, so anything here is left over: start clean.
  fs.rmSync(functionsDir, { recursive: true, force: true });
  fs.mkdirSync(functionsDir, { recursive: true });
  fs.mkdirSync(homeDir, { recursive: true });

  const supervisor = new Supervisor({
    socketPath,
    heapMb: config.heapMb,
    maxBody: config.maxBody,
    // Built from nothing: no NOMAD_*, no FNHOOK_*, no token, no credentials of the host.
    env: { NODE_ENV: 'production', TZ: 'UTC', HOME: homeDir },
    cwd: homeDir,
    log,
    logs,
  });
  const protocol = new Protocol({
    token: config.token,
    supervisor,
    functionsDir,
    modulesDir: config.modulesDir,
    maxBody: config.maxBody,
    maxFunctions: config.maxFunctions,
    log,
    logs,
  });
  supervisor.start(() => protocol.reload());

  const server = http.createServer(protocol.handle);
  // Longer than the gateway's idle timeout, so the gateway closes idle connections first and
  // never reuses one this side is closing. Call deadlines are enforced per call, not here.
  server.keepAliveTimeout = 75000;
  server.headersTimeout = 80000;
  server.requestTimeout = 0;

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, resolve);
  });
  const listening = { port: server.address().port, host: config.host };
  log('info', 'listening', listening);
  // The one line on stdout besides fatal errors: whoever started the runner by hand (or with
  // port 0, as the tests do) learns its port from it.
  process.stdout.write(JSON.stringify({ ts: new Date().toISOString(), level: 'info', msg: 'listening', ...listening }) + '\n');
  await warmProtocol(server.address().port, config.token);

  let stopping = false;
  const shutdown = async (signal) => {
    if (stopping) return;
    stopping = true;
    log('info', 'shutting down', { signal });
    const deadline = Date.now() + SHUTDOWN_MS;
    server.close();
    server.closeIdleConnections();
    await protocol.drain(SHUTDOWN_MS);
    await supervisor.stop(Math.max(100, deadline - Date.now()));
    log('info', 'stopped', {});
    process.exit(0);
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

/**
 * Sends this runner's own protocol server a few requests that change nothing (an invalid
 * assign, an unknown function), so that the code of the assign, load and run paths is compiled
 * before the first tenant's cold call needs it: measured, each first request to a fresh runner
 * cost a few milliseconds more than the next one. Failures are ignored.
 */
async function warmProtocol(port, token) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const send = (method, path, body) =>
    new Promise((resolve) => {
      const req = http.request(
        { host: '127.0.0.1', port, method, path, agent, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } },
        (res) => {
          res.resume();
          res.once('end', resolve);
          res.once('error', resolve);
        },
      );
      req.once('error', resolve);
      req.end(body);
    });
  for (let i = 0; i < 3; i++) {
    await send('GET', '/healthz');
    await send('GET', '/_fnhook/state');
    await send('POST', '/_fnhook/assign', '{"tenant":"-"}'); // not a valid tenant name: 400
    await send('PUT', '/_fnhook/functions/-', '{}'); // not a valid function name: 400
    await send('GET', '/_fnhook/run/-/x?y=1'); // 400 / 404, never a call
  }
  agent.destroy();
}

/** Reads the configuration, scrubs the environment and runs; exits 1 with one line on error. */
function main() {
  let config;
  try {
    config = readConfig(process.env);
  } catch (err) {
    process.stderr.write(`fnhook runner: ${err.message}\n`);
    process.exit(1);
  }
  // Nothing read from the environment should be found there again by accident.
  for (const name of Object.keys(process.env)) delete process.env[name];
  run(config).catch((err) => {
    process.stderr.write(`fnhook runner: ${err.message}\n`);
    process.exit(1);
  });
}

if (require.main === module) main();

module.exports = { readConfig };
