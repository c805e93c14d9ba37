// The gateway's REST API (see docs/gateway.md): bearer tokens, refresh on expiry, problem+json errors.

const STORAGE_KEY = 'jarvis.session';

/** The signed-in session ({access_token, refresh_token, username, role}) kept for this browser tab. */
export const session = {
  get() {
    try {
      return JSON.parse(sessionStorage.getItem(STORAGE_KEY) || 'null');
    } catch {
      return null;
    }
  },
  set(tokens) {
    sessionStorage.setItem(
      STORAGE_KEY,
      JSON.stringify({
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        username: tokens.username,
        role: tokens.role,
      }),
    );
  },
  clear() {
    sessionStorage.removeItem(STORAGE_KEY);
  },
  /** Whether the signed-in role may send commands (halt, resume, orders). */
  canCommand() {
    const role = this.get()?.role;
    return role === 'operator' || role === 'admin';
  },
};

/** A failed call: `status` and the RFC 9457 problem (title, detail, type) when the gateway sent one. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

/** Called when the session is gone for good (refresh failed): the app shows the login page. */
let onSignedOut = () => {};
export function whenSignedOut(fn) {
  onSignedOut = fn;
}

async function parse(response) {
  const type = response.headers.get('content-type') || '';
  if (response.status === 204) return null;
  if (type.includes('json')) return response.json();
  return response.text();
}

async function send(path, { method = 'GET', body, token } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
  });
  const data = await parse(response).catch(() => null);
  if (!response.ok) throw new ApiError(response.status, typeof data === 'object' ? data : { detail: data });
  return data;
}

let refreshing = null;

/** Swaps the refresh token for new tokens once, however many calls ask at the same time. */
export async function refresh() {
  const current = session.get();
  if (!current?.refresh_token) throw new ApiError(401, { detail: 'not signed in' });
  refreshing ??= send('/auth/refresh', { method: 'POST', body: { refresh_token: current.refresh_token } })
    .then((tokens) => {
      session.set(tokens);
      return tokens;
    })
    .finally(() => {
      refreshing = null;
    });
  return refreshing;
}

/** An authenticated call to `/api/v1<path>`; refreshes an expired access token once. */
export async function api(path, options = {}) {
  const current = session.get();
  if (!current) {
    onSignedOut();
    throw new ApiError(401, { detail: 'not signed in' });
  }
  try {
    return await send(path, { ...options, token: current.access_token });
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 401) throw err;
    try {
      const tokens = await refresh();
      return await send(path, { ...options, token: tokens.access_token });
    } catch (again) {
      if (again instanceof ApiError && again.status === 401) {
        session.clear();
        onSignedOut();
      }
      throw again;
    }
  }
}

/** Signs in; keeps the tokens for the tab. */
export async function login(username, password, totp) {
  const body = { username, password };
  if (totp) body.totp = totp;
  const tokens = await send('/auth/login', { method: 'POST', body });
  session.set(tokens);
  return tokens;
}

/** `?a=1&b=2` from an object, skipping empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  const text = q.toString();
  return text ? `?${text}` : '';
}
