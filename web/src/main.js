// The transferkit serve page: map + search + item + selection, over the HTTP API only.
import { getJson, getPointsF32, thumbnailUrl } from './api.js';
import { labelIssues, outliers } from './curation.js';
import { $, el, labelName, palette } from './dom.js';
import { createMap } from './map.js';
import { resultCard, runSearch, wireUpload } from './search.js';
import { exportSelection, SHOWN } from './selection.js';

// What the page shows, read-only for tests and the console: window.transferkit.state
const state = {
  ready: false,
  error: null,
  info: null,
  method: null,
  colourBy: 'label',
  total: 0,
  pointsDrawn: 0,
  idsLoaded: false,
  sampled: false,
  hovered: null,
  query: null,
  answeredBy: null,
  results: [],
  item: null,
  selection: [],
  exported: null,
  curation: null,
};
let map;
let points = { ids: [], labels: [], category: new Float32Array(0), xy: new Float32Array(0), predicted: null, correct: null };
let indexOf = new Map();
const controls = { k: $('#k'), label: $('#label-filter'), exact: $('#exact') };

function status(target, text, isError = false) {
  const node = $(target);
  node.textContent = text;
  node.classList.toggle('error', isError);
}

function showNotices(notices) {
  $('#notices').replaceChildren(...notices.map((text) => el('p.notice', {}, text)));
}

async function loadMap() {
  const method = $('#method').value;
  status('#map-status', `Loading the ${method.toUpperCase()} map...`);
  const limit = state.info.max_points;
  // Draw as soon as the coordinates arrive; the ids (14 MB of JSON at 1M points) follow and make
  // the points hoverable and clickable: at 1M they took longer than the coordinates and the draw.
  const metaPromise = getJson(`/api/points?method=${method}&limit=${limit}&format=json&fields=${state.info.run ? 'all' : 'ids'}`);
  const f32 = await getPointsF32(method, limit);
  const n = f32.count;
  const category = new Float32Array(n);
  const xy = new Float32Array(2 * n);
  for (let i = 0; i < n; i++) {
    xy[2 * i] = f32.data[3 * i];
    xy[2 * i + 1] = f32.data[3 * i + 1];
    category[i] = f32.data[3 * i + 2];
  }
  points = { ids: [], labels: f32.labels, category, xy, predicted: null, correct: null };
  indexOf = new Map();
  Object.assign(state, { method, total: f32.total, sampled: f32.sampled, idsLoaded: false });
  showNotices(state.info.notices);
  await recolour();
  const meta = await metaPromise;
  if (meta.ids.length !== n) throw new Error('The store changed while the map loaded; reload the page.');
  Object.assign(points, { ids: meta.ids, predicted: meta.predicted, correct: meta.correct });
  indexOf = new Map(meta.ids.map((id, i) => [id, i]));
  map.setIds(meta.ids);
  state.idsLoaded = true;
  showNotices([...state.info.notices, ...(meta.notices || [])]);
  await recolour();
  const shown = f32.sampled ? `${n.toLocaleString()} of ${f32.total.toLocaleString()} images (a sample)` : `${n.toLocaleString()} images`;
  status('#map-status', n ? `${shown}. Drag to pan, wheel to zoom, shift-drag (or Lasso) to select.` : 'No points to draw.');
}

/** Colour by label, predicted label (-1: the run could not read it) or correct-vs-wrong. */
async function recolour() {
  let by = $('#colour-by').value;
  let category = points.category;
  let names = points.labels;
  if (by === 'predicted' && points.predicted) {
    names = [...points.labels, '(not predicted)'];
    category = Float32Array.from(points.predicted, (p) => (p < 0 ? names.length - 1 : p));
  } else if (by === 'correct' && points.correct) {
    names = ['wrong', 'correct'];
    category = Float32Array.from(points.correct, (c) => (c ? 1 : 0));
  } else {
    by = 'label';
  }
  const colors = by === 'correct' ? ['#d62728', '#2ca02c'] : palette(names);
  const pointNames = Array.from(points.category, (c) => points.labels[c]);
  state.pointsDrawn = await map.draw({ xy: points.xy, category, colors, pointIds: points.ids, pointNames });
  const counts = new Array(names.length).fill(0);
  for (const c of category) counts[c] += 1;
  $('#legend').replaceChildren(
    ...names.map((name, i) =>
      counts[i] ? el('span.swatch', {}, el('i', { style: `background:${colors[i]}` }), `${labelName(name)} (${counts[i]})`) : null,
    ),
  );
  state.colourBy = by;
}

async function searchFor(query) {
  const what = query.file ? `the uploaded ${query.file.name}` : `image ${query.id.slice(0, 12)}`;
  status('#search-status', `Searching for the neighbours of ${what}...`);
  try {
    const { results, answeredBy } = await runSearch(query, controls);
    Object.assign(state, { query: query.file ? { upload: query.file.name } : { id: query.id }, results, answeredBy });
    $('#results').replaceChildren(...results.map((r) => resultCard(r, (id) => pick(id))));
    const filter = controls.label.value ? `, label ${labelName(controls.label.value)}` : '';
    const how = answeredBy === 'ann' ? `the ANN index (${state.info.index?.kind ?? 'approximate'})` : 'exact search';
    status('#search-status', `${results.length} neighbours of ${what}${filter}, answered by ${how}.`);
    map.highlight(results.map((r) => indexOf.get(r.id)).filter((i) => i !== undefined));
  } catch (error) {
    status('#search-status', error.message, true);
  }
}

async function showItem(id) {
  try {
    const item = await getJson(`/api/items/${encodeURIComponent(id)}`);
    state.item = item;
    const rows = [
      ['File', el('span', { title: item.path }, item.relpath || item.path)],
      ['Label', labelName(item.label)],
      ['Split', item.split || '-'],
      ['Size', item.width ? `${item.width} x ${item.height}` : '-'],
    ];
    if (item.predicted) rows.push(['Predicted', `${labelName(item.predicted.label)} (${(100 * item.predicted.confidence).toFixed(1)}%)`]);
    else if (state.info.run) rows.push(['Predicted', 'not predicted by the run']);
    $('#item').replaceChildren(
      el('img', { src: thumbnailUrl(id), alt: labelName(item.label) }),
      el('dl', {}, ...rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)])),
    );
  } catch (error) {
    $('#item').replaceChildren(el('p.error', {}, error.message));
  }
}

function pick(id) {
  showItem(id);
  searchFor({ id });
}

function showSelection(indices) {
  const ids = indices.map((i) => points.ids[i]);
  state.selection = ids;
  $('#selection-count').textContent = ids.length
    ? `${ids.length} selected${ids.length > SHOWN ? ` (showing ${SHOWN})` : ''}.`
    : 'Nothing selected: shift-drag on the map (or turn on Lasso) to select images.';
  $('#export-csv').disabled = $('#export-json').disabled = !ids.length;
  $('#selection').replaceChildren(
    ...ids.slice(0, SHOWN).map((id, i) =>
      resultCard({ id, rank: i + 1, score: 0, label: points.labels[points.category[indices[i]]], path: id }, pick),
    ),
  );
}

async function exportAs(format) {
  status('#selection-status', `Exporting ${state.selection.length} images...`);
  try {
    const n = await exportSelection(state.selection, format);
    state.exported = { format, count: n };
    status('#selection-status', `Exported ${n} images as ${format.toUpperCase()}.`);
  } catch (error) {
    status('#selection-status', error.message, true);
  }
}

/** Show the label issues or the outliers (the first request fits the heads: seconds) and highlight them on the map. */
async function showCuration(kind) {
  const buttons = [$('#find-label-issues'), $('#find-outliers')];
  buttons.forEach((b) => { b.disabled = true; });
  status('#curation-status', kind === 'label-issues'
    ? 'Cross-validating heads on the embeddings (seconds; once per store version)...' : 'Finding the nearest neighbours...');
  try {
    const { entries, text } = await (kind === 'label-issues' ? labelIssues(pick) : outliers(pick));
    state.curation = { kind, ids: entries.map((e) => e.id) };
    $('#curation').replaceChildren(...entries.map((e) => e.card));
    status('#curation-status', text);
    map.highlight(entries.map((e) => indexOf.get(e.id)).filter((i) => i !== undefined));
  } catch (error) {
    state.curation = { kind, error: error.message };
    status('#curation-status', error.message, true);
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

async function main() {
  const info = await getJson('/api/info');
  state.info = info;
  const labels = Object.keys(info.labels);
  $('#summary').textContent = `${info.count.toLocaleString()} images, ${info.model}` + (info.run ? `, run ${info.run.path}` : '');
  $('#method').replaceChildren(...info.projections.map((m) => el('option', { value: m }, m.toUpperCase())));
  if (info.run) {
    $('#colour-by').append(el('option', { value: 'predicted' }, 'predicted label'), el('option', { value: 'correct' }, 'correct vs wrong'));
  }
  controls.label.append(...labels.filter((l) => l !== '').map((l) => el('option', { value: l }, `${l} (${info.labels[l]})`)));
  controls.label.disabled = labels.filter((l) => l !== '').length === 0;
  controls.k.max = String(info.max_k);
  controls.exact.checked = !info.index;
  controls.exact.disabled = !info.index;
  $('#exact-label').title = info.index
    ? `Unchecked: the ANN index (${info.index.kind}, recall@10 ${info.index.recall_at_10.toFixed(3)}) answers.`
    : 'The store has no ANN index (transferkit index builds one): every search is exact.';
  if (!info.index) $('#exact-label').append(' (no ANN index)');
  showNotices(info.notices || []);

  map = createMap({
    canvas: $('#map'),
    tooltip: $('#tooltip'),
    onPick: (index) => points.ids[index] !== undefined && pick(points.ids[index]),
    onSelect: showSelection,
    onHover: (hovered) => {
      state.hovered = hovered;
    },
  });
  $('#method').addEventListener('change', () => loadMap().catch((e) => status('#map-status', e.message, true)));
  $('#colour-by').addEventListener('change', recolour);
  $('#lasso').addEventListener('change', (event) => map.setLasso(event.target.checked));
  $('#export-csv').addEventListener('click', () => exportAs('csv'));
  $('#export-json').addEventListener('click', () => exportAs('json'));
  $('#find-label-issues').addEventListener('click', () => showCuration('label-issues'));
  $('#find-outliers').addEventListener('click', () => showCuration('outliers'));
  wireUpload({
    zone: $('#search-panel'),
    input: $('#file'),
    onFile: (file) => {
      state.item = null;
      $('#item').replaceChildren(el('p', {}, `Uploaded: ${file.name}`));
      searchFor({ file });
    },
  });
  showSelection([]);
  if (info.count) await loadMap();
  else status('#map-status', 'The store is empty: nothing to draw.');
  state.ready = true;
}

window.transferkit = {
  get state() {
    return structuredClone(state);
  },
  get scatterplot() {
    return map?.plot;
  },
};

main().catch((error) => {
  state.error = error.message;
  state.ready = true;
  status('#map-status', error.message, true);
});
