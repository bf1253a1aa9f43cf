// Small DOM helpers. Every piece of text from the API goes in through
// textContent, never parsed as HTML, so nothing a node reports can run as code.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = Array.isArray(v) ? v.filter(Boolean).join(' ') : v;
      else if (k === 'text') el.textContent = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (v === true) el.setAttribute(k, '');
      else el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false || c === '') continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

function validTime(iso) {
  if (!iso || typeof iso !== 'string' || iso.startsWith('0001-')) return null;
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? null : d;
}

const pad = (n) => String(n).padStart(2, '0');

// fmtTime spells a time as local "YYYY-MM-DD HH:MM:SS".
export function fmtTime(iso) {
  const d = validTime(iso);
  if (!d) return '—';
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function ago(iso) {
  const d = validTime(iso);
  if (!d) return '—';
  let s = Math.round((Date.now() - d.getTime()) / 1000);
  if (s < 0) s = 0;
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

// timeEl is a <time> showing how long ago, with the exact time on hover.
export function timeEl(iso, relative = true) {
  const d = validTime(iso);
  if (!d) return h('span', { class: 'muted', text: '—' });
  return h('time', { datetime: iso, title: fmtTime(iso), text: relative ? ago(iso) : fmtTime(iso) });
}

export function bytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n) || n <= 0) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

export function stateBadge(state) {
  const s = state || 'unknown';
  return h('span', { class: `badge state state-${s.replace(/[^a-z]/g, '')}`, text: s });
}

export function chip(text, kind = '') {
  return h('span', { class: ['chip', kind && `chip-${kind}`], text });
}

export function mono(text) {
  return h('span', { class: 'mono', text: text ?? '—' });
}

// field is a labelled form control.
export function field(label, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  return h('div', { class: 'field' },
    h('label', { for: id, text: label }),
    control,
    hint ? h('small', { class: 'hint', text: hint }) : null);
}

export function select(name, options, value) {
  const el = h('select', { name });
  for (const o of options) {
    const [v, label, disabled] = Array.isArray(o) ? o : [o, o];
    el.append(h('option', { value: v, text: label, selected: v === value, disabled: !!disabled }));
  }
  return el;
}

export function debounce(fn, ms) {
  let t;
  return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
}

export function card(title, body, { actions, id, cls } = {}) {
  return h('section', { class: ['card', cls], id, 'aria-labelledby': id ? `${id}-title` : null },
    h('div', { class: 'card-head' },
      h('h2', { id: id ? `${id}-title` : null, text: title }),
      actions ? h('div', { class: 'card-actions' }, actions) : null),
    h('div', { class: 'card-body' }, body));
}

export function empty(text) {
  return h('p', { class: 'empty', text });
}
