// The map: a regl-scatterplot (WebGL) of the projection; hover tooltip, click to pick, lasso to select.
import createScatterplot from 'regl-scatterplot';

import { thumbnailUrl } from './api.js';
import { el, labelName } from './dom.js';

export function createMap({ canvas, tooltip, onPick, onSelect, onHover }) {
  const plot = createScatterplot({
    canvas,
    syncEvents: true, // `select` then `lassoEnd` in one turn: tells a click from a lasso
    backgroundColor: '#ffffff',
    pointSize: 5,
    pointSizeSelected: 3,
    pointOutlineWidth: 2,
    pointColorActive: '#e3116c', // selected and search results: one colour that no label palette starts with
    opacityInactiveScale: 0.5,
    pointColorHover: '#000000',
    lassoColor: '#1f6feb',
    colorBy: 'valueA',
  });
  let ids = [];
  let names = [];
  let fromLasso = false;

  plot.subscribe('lassoEnd', () => {
    fromLasso = true;
  });
  plot.subscribe('select', ({ points }) => {
    queueMicrotask(() => {
      const lasso = fromLasso;
      fromLasso = false;
      if (!lasso && points.length === 1) onPick(points[0]);
      else onSelect(points);
    });
  });
  plot.subscribe('deselect', () => onSelect([]));
  plot.subscribe('pointOver', (index) => showTooltip(index));
  plot.subscribe('pointOut', () => {
    tooltip.hidden = true;
    onHover(null);
  });

  function showTooltip(index) {
    const [x, y] = plot.getScreenPosition(index);
    const label = el('div.tooltip-label', {}, labelName(names[index]));
    if (ids[index] === undefined) {
      tooltip.replaceChildren(label); // the ids are still loading: the label only
    } else {
      const img = el('img', { src: thumbnailUrl(ids[index]), alt: ids[index] });
      img.addEventListener('load', () => onHover({ index, id: ids[index], label: names[index], loaded: true }));
      tooltip.replaceChildren(img, label);
    }
    const { width } = canvas.getBoundingClientRect();
    tooltip.style.left = `${x + 180 > width ? x - 172 : x + 12}px`;
    tooltip.style.top = `${Math.max(0, y - 60)}px`;
    tooltip.hidden = false;
    onHover({ index, id: ids[index], label: names[index], loaded: false });
  }

  return {
    plot,
    /** Draw n points: coords interleaved [x, y, ...], category per point, colours per category. */
    async draw({ xy, category, colors, pointIds, pointNames }) {
      ids = pointIds;
      names = pointNames;
      const n = category.length;
      const x = new Float32Array(n);
      const y = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        x[i] = xy[2 * i];
        y[i] = xy[2 * i + 1];
      }
      plot.set({ pointColor: colors.length ? colors : ['#8a8f98'], pointSize: n > 200000 ? 2 : n > 20000 ? 3 : n > 2000 ? 5 : 7 });
      plot.clear();
      if (n) await plot.draw({ x, y, valueA: category }, { zDataType: 'categorical' });
      return n;
    },
    /** The store ids of the drawn points, once they arrive. */
    setIds(pointIds) {
      ids = pointIds;
    },
    highlight(indices) {
      plot.select(indices, { preventEvent: true });
    },
    setLasso(on) {
      plot.set({ mouseMode: on ? 'lasso' : 'panZoom' });
    },
  };
}
