// Curation: the store's likely label errors and outliers (/api/label-issues, /api/outliers) as thumbnail cards.
import { getJson, thumbnailUrl } from './api.js';
import { el, labelName } from './dom.js';

/** Cards listed per answer (the API computes the whole ranking once per store version). */
export const LISTED = 60;

function card(id, path, lines, onClick) {
  return el(
    'button.card',
    { type: 'button', 'data-id': id, title: path, onclick: () => onClick(id) },
    el('img', { src: thumbnailUrl(id), alt: '', loading: 'lazy' }),
    el('span.caption', {}, ...lines),
  );
}

/** {entries: [{id, card}], text}: the label issues, most likely error first; `onClick(id)` picks an image. */
export async function labelIssues(onClick) {
  const r = await getJson(`/api/label-issues?top=${LISTED}`);
  const entries = r.issues.map((i) => ({
    id: i.id,
    card: card(i.id, i.path, [
      el('b', {}, `#${i.rank}${i.confident ? '*' : ''}`),
      ` ${i.score.toFixed(2)} `,
      el('span.label', {}, `${labelName(i.given_label)} \u2192 ${labelName(i.suggested_label)}`),
    ], onClick),
  }));
  const text = `${r.num_issues.toLocaleString()} of ${r.num_images.toLocaleString()} labels contradicted by ` +
    `${r.cross_validation.folds}-fold heads, ${r.num_confident} confident (*); about ${Math.round(r.estimated_num_issues)} ` +
    `estimated wrong. Showing ${entries.length}.`;
  return { entries, text };
}

/** {entries, text}: the images farthest from everything, most isolated first. */
export async function outliers(onClick) {
  const r = await getJson(`/api/outliers?top=${LISTED}`);
  const entries = r.outliers.map((o) => ({
    id: o.id,
    card: card(o.id, o.path, [el('b', {}, `#${o.rank}`), ` z ${o.z.toFixed(1)} `, el('span.label', {}, labelName(o.label))], onClick),
  }));
  const text = `${r.num_flagged.toLocaleString()} of ${r.num_images.toLocaleString()} images far from everything ` +
    `(robust z >= ${r.z_threshold}, mean distance to the ${r.k} nearest). Showing ${entries.length}.`;
  return { entries, text };
}
