// Search: by a stored id (a clicked point or thumbnail) or an uploaded image; results as a thumbnail grid.
import { search, thumbnailUrl } from './api.js';
import { el, labelName } from './dom.js';

export function resultCard(result, onClick) {
  return el(
    'button.card',
    { type: 'button', 'data-id': result.id, title: result.path, onclick: () => onClick(result.id) },
    el('img', { src: thumbnailUrl(result.id), alt: labelName(result.label), loading: 'lazy' }),
    el(
      'span.caption',
      {},
      el('b', {}, `#${result.rank}`),
      ` ${result.score.toFixed(3)} `,
      el('span.label', {}, labelName(result.label)),
    ),
  );
}

/** Run a search with the panel's k, label filter and exact switch; `query` is {id} or {file}. */
export async function runSearch(query, controls) {
  const k = Math.max(1, Math.min(Number(controls.k.value) || 10, Number(controls.k.max) || 100));
  controls.k.value = String(k);
  return search({ ...query, k, label: controls.label.value, exact: controls.exact.checked });
}

/** Wire the drop zone and the file input to `onFile`. */
export function wireUpload({ zone, input, onFile }) {
  input.addEventListener('change', () => {
    if (input.files.length) onFile(input.files[0]);
    input.value = '';
  });
  for (const name of ['dragenter', 'dragover']) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add('over');
    });
  }
  for (const name of ['dragleave', 'drop']) zone.addEventListener(name, () => zone.classList.remove('over'));
  zone.addEventListener('drop', (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) onFile(file);
  });
}
