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

/** Sends the protocol's error body. If the response already started, it is cut instead. */
function sendError(res, status, code, message, extraHeaders) {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  // After a 413 the rest of the body is unread: close rather than drain it.
  if (status === 413) extraHeaders = { ...extraHeaders, connection: 'close' };
  sendJson(res, status, { error: { code, message } }, extraHeaders);
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
      req.resume(); // let the 413 go out; the connection is closed afterwards
      reject(new HttpError(413, 'too_large', `request body is larger than ${limit} bytes`));
      return;
    }
    const chunks = [];
    let size = 0;
    const onData = (chunk) => {
      size += chunk.length;
      if (size > limit) {
        req.off('data', onData);
        req.resume();
        reject(new HttpError(413, 'too_large', `request body is larger than ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => {
      if (size <= limit) resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size));
    });
    req.once('error', reject);
    req.once('close', () => {
      if (!req.complete) reject(new HttpError(400, 'aborted', 'request aborted'));
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

module.exports = { HttpError, sendJson, sendError, sendHttpError, readBody, readJson };
