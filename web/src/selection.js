// The lasso selection: a list of the selected images, exported with their paths as CSV or JSON.
import { postJson } from './api.js';
import { download } from './dom.js';

const SHOWN = 120; // thumbnails listed; the export has every selected image
const CHUNK = 50000; // ids per POST /api/items (about 1 MB of JSON)

/** [{id, path, relpath, label, split}] for the ids, from POST /api/items in chunks. */
export async function describe(ids) {
  const out = [];
  for (let start = 0; start < ids.length; start += CHUNK) {
    out.push(...(await postJson('/api/items', { ids: ids.slice(start, start + CHUNK) })));
  }
  return out;
}

function csvField(value) {
  const text = String(value ?? '');
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export function toCsv(rows) {
  const head = ['id', 'path', 'relpath', 'label', 'split'];
  return [head.join(','), ...rows.map((r) => head.map((key) => csvField(r[key])).join(','))].join('\n') + '\n';
}

export async function exportSelection(ids, format) {
  const rows = await describe(ids);
  if (format === 'csv') download('selection.csv', toCsv(rows), 'text/csv');
  else download('selection.json', JSON.stringify(rows, null, 2) + '\n', 'application/json');
  return rows.length;
}

export { SHOWN };
