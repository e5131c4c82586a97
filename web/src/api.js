// The HTTP API (see /docs): every call carries the page's access token, when it has one.

const token = new URLSearchParams(window.location.search).get('token');

export class ApiError extends Error {}

function headers() {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function call(path, init = {}) {
  const response = await fetch(path, { ...init, headers: { ...headers(), ...(init.headers || {}) } });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error || message;
    } catch {
      // not JSON: keep the status line
    }
    throw new ApiError(message);
  }
  return response;
}

export async function getJson(path) {
  return (await call(path)).json();
}

export async function postJson(path, body) {
  const init = { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } };
  return (await call(path, init)).json();
}

/** The f32 map: Float32Array of x, y, label triples, and the metadata the headers carry. */
export async function getPointsF32(method, limit) {
  const response = await call(`/api/points?method=${method}&limit=${limit}&format=f32`);
  const data = new Float32Array(await response.arrayBuffer());
  return {
    data,
    total: Number(response.headers.get('X-Total')),
    count: Number(response.headers.get('X-Count')),
    sampled: response.headers.get('X-Sampled') === '1',
    labels: JSON.parse(decodeURIComponent(response.headers.get('X-Labels') || '[]')),
  };
}

/** Search by stored id or by an uploaded file; returns {results, answeredBy}. */
export async function search({ id, file, k, label, exact }) {
  let response;
  if (file) {
    const form = new FormData();
    form.append('file', file);
    form.append('k', String(k));
    if (label) form.append('label', label);
    form.append('exact', exact ? '1' : '0');
    response = await call('/api/search', { method: 'POST', body: form });
  } else {
    const query = new URLSearchParams({ id, k: String(k), exact: exact ? '1' : '0' });
    if (label) query.set('label', label);
    response = await call(`/api/search?${query}`);
  }
  return { results: await response.json(), answeredBy: response.headers.get('X-Search') || 'exact' };
}

/** An image URL for <img>: it cannot send headers, so the token rides in the query. */
export function thumbnailUrl(id) {
  const url = `/api/items/${encodeURIComponent(id)}/thumbnail`;
  return token ? `${url}?token=${encodeURIComponent(token)}` : url;
}
