// The lasso selection: a list of the selected images, exported with their paths as CSV or JSON.
import { getJson } from './api.js';
import { download } from './dom.js';

const SHOWN = 120; // thumbnails listed; the export has every selected image

/** [{id, path, relpath, label}] for the ids, a few requests at a time. */
export async function describe(ids, concurrency = 8) {
  const out = new Array(ids.length);
  let next = 0;
  async function worker() {
    while (next < ids.length) {
      const i = next++;
      const item = await getJson(`/api/items/${encodeURIComponent(ids[i])}`);
      out[i] = { id: item.id, path: item.path, relpath: item.relpath, label: item.label };
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, ids.length) }, worker));
  return out;
}

function csvField(value) {
  const text = String(value ?? '');
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export function toCsv(rows) {
  const head = ['id', 'path', 'relpath', 'label'];
  return [head.join(','), ...rows.map((r) => head.map((key) => csvField(r[key])).join(','))].join('\n') + '\n';
}

export async function exportSelection(ids, format) {
  const rows = await describe(ids);
  if (format === 'csv') download('selection.csv', toCsv(rows), 'text/csv');
  else download('selection.json', JSON.stringify(rows, null, 2) + '\n', 'application/json');
  return rows.length;
}

export { SHOWN };
