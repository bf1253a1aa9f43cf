// The JSON API client: the session cookie goes by itself (same origin),
// mutating calls carry the CSRF token the login or whoami answer gave.

export class APIError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let csrf = '';
let onUnauthorized = () => {};

export function setCSRF(token) { csrf = token || ''; }
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

export const enc = encodeURIComponent;

export async function api(method, path, body, { quiet401 = false } = {}) {
  const headers = { Accept: 'application/json' };
  const opts = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (method !== 'GET' && method !== 'HEAD') {
    headers['Content-Type'] = 'application/json';
    headers['X-CSRF-Token'] = csrf;
    if (body !== undefined) opts.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(`/api/v1${path}`, opts);
  } catch (e) {
    throw new APIError(0, 'network', `cannot reach the appliance: ${e.message}`);
  }
  if (res.status === 204) return null;
  let data = null;
  const text = await res.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const err = data && data.error ? data.error : {};
    const e = new APIError(res.status, err.code || `http_${res.status}`, err.message || `${res.status} ${res.statusText}`);
    if (res.status === 401 && !quiet401) onUnauthorized(e);
    throw e;
  }
  return data;
}

export const get = (path, opts) => api('GET', path, undefined, opts);
export const post = (path, body) => api('POST', path, body ?? {});
export const patch = (path, body) => api('PATCH', path, body);
export const del = (path) => api('DELETE', path);

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

// getAll follows next_cursor (as cursor= or after=) until the last page.
export async function getAll(path, params = {}, { cursorParam = 'cursor', max = 20 } = {}) {
  const items = [];
  let cursor = '';
  for (let i = 0; i < max; i++) {
    const page = await get(path + query({ ...params, [cursorParam]: cursor }));
    items.push(...(page.items || []));
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  return items;
}
