'use strict';
// JSON-over-HTTP helpers shared by the protocol server (parent) and the host (child).

/**
 * An error that maps onto the protocol's error body {"error":{"code","message"}}.
 * `status` is the HTTP status to answer with; `message` is safe to show to the caller.
 */
class HttpError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * Sends `value` as a JSON response with `status`. `extraHeaders` (an object) is merged in.
 * Does nothing if the response was already started or the client went away.
 */
function sendJson(res, status, value, extraHeaders) {
  if (res.headersSent || res.destroyed) return;
  const body = JSON.stringify(value);
  const headers = {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
  };
  if (extraHeaders) Object.assign(headers, extraHeaders);
  res.writeHead(status, headers);
  res.end(body);
}

/** Header that marks an error answered by the runner itself, not by the function. */
const ERROR_HEADER = 'x-fnhook-error';

/**
 * Sends the protocol's error body, with its code also in x-fnhook-error (the gateway tells
 * the runner's own 404 or 409 from a function's by it). If the response already started, it
 * is cut instead.
 */
function sendError(res, status, code, message, extraHeaders) {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJson(res, status, { error: { code, message } }, { ...extraHeaders, [ERROR_HEADER]: code });
}

/** Most bytes of a refused body that discard() reads before it cuts the connection. */
const DISCARD_LIMIT = 64 * 1024 * 1024;

/**
 * Reads and drops the rest of a request body the runner answers without (401, 404, 413...):
 * closing a socket with unread data resets it, and the client may lose the answer while it is
 * still sending. A sender that goes on past DISCARD_LIMIT is cut off.
 */
function discard(req) {
  let dropped = 0;
  req.on('data', (chunk) => {
    dropped += chunk.length;
    if (dropped > DISCARD_LIMIT) req.socket.destroy();
  });
  req.resume();
}

/** Sends an HttpError, or a generic 500 for anything else (the cause is not leaked). */
function sendHttpError(res, err) {
  if (err instanceof HttpError) sendError(res, err.status, err.code, err.message);
  else sendError(res, 500, 'internal', 'internal error');
}

/**
 * Reads the whole request body into one Buffer, rejecting with a 413 HttpError as soon as it
 * grows past `limit` bytes (the rest is not read; the caller answers and the socket is closed).
 */
function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (declared > limit) {
      discard(req);
      reject(new HttpError(413, 'too_large', `request body is larger than ${limit} bytes`));
      return;
    }
    const chunks = [];
    let size = 0;
    const onData = (chunk) => {
      size += chunk.length;
      if (size > limit) {
        req.off('data', onData);
        discard(req);
        reject(new HttpError(413, 'too_large', `request body is larger than ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => {
      if (size <= limit) resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size));
    });
    const aborted = () => reject(new HttpError(400, 'aborted', 'request aborted'));
    req.once('error', aborted);
    req.once('close', () => {
      if (!req.complete) aborted();
    });
  });
}

/** Reads and parses a JSON object body (400 `invalid_json` if it is not one). */
async function readJson(req, limit) {
  const raw = await readBody(req, limit);
  let value;
  try {
    value = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new HttpError(400, 'invalid_json', 'request body is not valid JSON');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new HttpError(400, 'invalid_json', 'request body must be a JSON object');
  }
  return value;
}

module.exports = { HttpError, discard, sendJson, sendError, sendHttpError, readBody, readJson };
