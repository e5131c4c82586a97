// Tiny DOM helpers: el('div.card', {title: 'x'}, child, 'text').

export function el(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split('.');
  const node = document.createElement(tag || 'div');
  if (classes.length) node.className = classes.join(' ');
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? '' : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

export const $ = (selector) => document.querySelector(selector);

export function labelName(label) {
  return label === '' || label === null || label === undefined ? '(unlabelled)' : label;
}

/** A categorical palette (Tableau 10, then evenly spaced hues); unlabelled is grey. */
export function palette(names) {
  const base = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];
  return names.map((name, i) => {
    if (name === '') return '#8a8f98';
    if (i < base.length) return base[i];
    return `hsl(${Math.round((i * 137.508) % 360)}, 60%, 55%)`;
  });
}

export function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = el('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
