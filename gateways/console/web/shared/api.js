// The admin API from the consoles: same origin, bearer token of the session
// kept for this tab only (sessionStorage), errors as ApiError with the API's code.

const BASE = '/admin/api/v1';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class Api {
  /** `storageKey` keeps the admin and staff consoles' sessions apart. */
  constructor(storageKey) {
    this.storageKey = storageKey;
  }

  get token() {
    return sessionStorage.getItem(this.storageKey);
  }

  async login(tenantId, username, password) {
    const answer = await this.call('/login', { method: 'POST', body: { tenant_id: tenantId, username, password }, anonymous: true });
    sessionStorage.setItem(this.storageKey, answer.token);
    return answer;
  }

  async logout() {
    try {
      await this.call('/logout', { method: 'POST' });
    } finally {
      sessionStorage.removeItem(this.storageKey);
    }
  }

  /** GET returning JSON. */
  get(path, query) {
    const search = query ? `?${new URLSearchParams(Object.entries(query).filter(([, v]) => v !== '' && v !== undefined && v !== null))}` : '';
    return this.call(`${path}${search}`);
  }

  /** A write with its Idempotency-Key (the caller keeps the key across retries of one intent). */
  write(method, path, body, key) {
    return this.call(path, { method, body, key });
  }

  async call(path, { method = 'GET', body, key, anonymous = false, text = false } = {}) {
    const headers = { Accept: text ? 'text/csv' : 'application/json' };
    if (!anonymous && this.token) headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (key) headers['Idempotency-Key'] = key;
    let response;
    try {
      response = await fetch(`${BASE}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (error) {
      throw new ApiError(0, 'network', `the server cannot be reached (${error.message})`);
    }
    if (response.status === 401 && !anonymous) {
      sessionStorage.removeItem(this.storageKey);
      window.dispatchEvent(new CustomEvent('wxcm:signed-out'));
    }
    if (!response.ok) {
      let code = `http_${response.status}`;
      let message = response.statusText || 'request failed';
      try {
        const answer = await response.json();
        code = answer.error?.code ?? code;
        message = answer.error?.message ?? message;
      } catch {
        // Not the API's JSON error shape (a proxy's page): keep the status text.
      }
      throw new ApiError(response.status, code, message);
    }
    if (response.status === 204) return null;
    return text ? response.text() : response.json();
  }
}

/** A fresh Idempotency-Key for one intent. */
export function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Today's merchant day (UTC+8) as YYYY-MM-DD, or `offsetDays` from it. */
export function merchantDay(offsetDays = 0, now = Date.now()) {
  const shifted = new Date(now + 8 * 3600 * 1000 + offsetDays * 86400 * 1000);
  return shifted.toISOString().slice(0, 10);
}

/** Adds days to a YYYY-MM-DD date. */
export function addDays(day, days) {
  const date = new Date(`${day}T00:00:00Z`);
  date.setUTCDate(date.getUTCDate() + days);
  return date.toISOString().slice(0, 10);
}

/** Days from `from` to `to`, both included. */
export function daysBetween(from, to) {
  return Math.round((Date.parse(`${to}T00:00:00Z`) - Date.parse(`${from}T00:00:00Z`)) / 86400000) + 1;
}
