// The public API, called with the operator's bearer token: JSON in the service's envelope, and
// a job's server-sent events read with fetch() (EventSource can't send an Authorization header).

import { token } from './auth.js';

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** Called when the API answers 401: the token expired or was revoked. */
let onUnauthorized = () => {};
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

/** A random key per user action, so a repeated click does the thing once. */
export function newKey() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function headers(extra = {}) {
  const h = { Accept: 'application/json', ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

/**
 * Calls the API; resolves to `{data, meta}` of a success envelope, rejects with an ApiError.
 * `key` sets an Idempotency-Key.
 */
export async function call(method, path, { body, key } = {}) {
  const extra = {};
  if (body !== undefined) extra['Content-Type'] = 'application/json';
  if (key) extra['Idempotency-Key'] = key;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headers(extra),
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (err) {
    throw new ApiError(0, 'NETWORK', `The service did not answer (${err.message}).`);
  }
  let envelope = null;
  try {
    envelope = await response.json();
  } catch {
    /* not JSON */
  }
  if (response.ok && envelope?.success) return { data: envelope.data, meta: envelope.meta };
  const error = envelope?.error ?? {};
  if (response.status === 401) onUnauthorized();
  throw new ApiError(
    response.status,
    error.code ?? 'HTTP_' + response.status,
    error.message ?? response.statusText,
    error.details,
  );
}

export const get = (path) => call('GET', path);

/** `/path?k=v…` without the empty values. */
export function withQuery(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

const FINAL = new Set(['succeeded', 'failed', 'compensated']);
export const isFinal = (job) => FINAL.has(job?.status);

/**
 * Follows a job live: calls `onJob` with the whole job on every event of
 * `GET /api/v1/jobs/{id}/events`, and resolves to the finished job. If the stream ends early (a
 * replica shutting down) it reconnects; the first event of a new stream is the current state.
 */
export async function followJob(id, onJob, { signal } = {}) {
  let last = null;
  for (let attempt = 0; attempt < 20 && !signal?.aborted; attempt++) {
    try {
      const response = await fetch(`/api/v1/jobs/${encodeURIComponent(id)}/events`, {
        headers: headers({ Accept: 'text/event-stream' }),
        cache: 'no-store',
        signal,
      });
      if (!response.ok) {
        if (response.status === 401) onUnauthorized();
        const body = await response.json().catch(() => ({}));
        throw new ApiError(
          response.status,
          body.error?.code ?? 'HTTP',
          body.error?.message ?? 'stream refused',
        );
      }
      for await (const event of sseEvents(response.body)) {
        if (!event.data) continue;
        last = JSON.parse(event.data);
        onJob(last);
        if (event.event === 'finished' || isFinal(last)) return last;
      }
    } catch (err) {
      if (signal?.aborted) return last;
      if (err instanceof ApiError && err.status >= 400 && err.status < 500) throw err;
    }
    if (isFinal(last)) return last;
    await new Promise((resolve) => setTimeout(resolve, Math.min(500 * 2 ** attempt, 5000)));
  }
  return last;
}

/** Server-sent events of a response body: `{event, data, id}` per blank-line-terminated block. */
async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let event = { event: 'message', data: '', id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let newline;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      if (newline === buffer.length - 1 && buffer.endsWith('\r')) break; // maybe half of \r\n
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith('\r\n', newline) ? 2 : 1));
      if (line === '') {
        if (event.data) yield { ...event, data: event.data.replace(/\n$/, '') };
        event = { event: 'message', data: '', id: null };
        continue;
      }
      if (line.startsWith(':')) continue; // a keep-alive comment
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'data') event.data += value + '\n';
      else if (field === 'event') event.event = value;
      else if (field === 'id') event.id = value;
    }
  }
}
