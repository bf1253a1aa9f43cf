// The GPU figures of burn-ins beside their peers': a node's cards (on
// its page) and the fleet's cards below their peers (#/gpus). The
// comparison is the server's (GET /nodes/ID/gpus, GET /gpus): the page
// only shows it.

import { h, clear, timeEl, card, empty, chip } from './dom.js';
import { get, enc } from './api.js';

const num = (v) => (v === null || v === undefined ? '—' : (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1)));

function verdictBadge(c) {
  const kind = { 'below peers': 'gpu-below', ok: 'gpu-ok' }[c.verdict] || 'gpu-none';
  return h('span', { class: `badge gpu-verdict ${kind}`, 'data-verdict': c.verdict, title: c.reason || '', text: c.verdict });
}

// figureCell is a figure with its peers' median and ratio beneath.
function figureCell(f, unit) {
  if (!f || f.value === null || f.value === undefined) return h('td', { class: 'muted', text: '—' });
  const peers = f.peer_median > 0
    ? `peers ${num(f.peer_median)} ×${f.peers} · ${Math.round(100 * f.ratio)}%`
    : `${f.peers} peers`;
  return h('td', { class: ['num', f.below && 'gpu-fig-below'], 'data-below': f.below ? 'true' : 'false' },
    h('div', { text: `${num(f.value)}${unit}` }), h('div', { class: 'sub', text: peers }));
}

function cardsTable(cards, withNode) {
  const head = [withNode ? 'Node' : null, 'GPU', 'Model', 'TFLOP/s', 'Memory GB/s', 'Under load', 'Verdict'].filter(Boolean);
  return h('div', { class: 'table-wrap' }, h('table', { class: 'grid grid-compact gpu-figures' },
    h('thead', {}, h('tr', {}, head.map((c) => h('th', { scope: 'col', text: c })))),
    h('tbody', {}, cards.map((c) => h('tr', { 'data-gpu': `${c.node}/${c.index}`, class: c.verdict === 'below peers' ? 'gpu-row-below' : '' },
      withNode ? h('td', {}, h('a', { href: `#/nodes/${enc(c.node)}`, text: c.node_name || c.node })) : null,
      h('td', { class: 'num', text: String(c.index) }),
      h('td', { text: c.model || '—' }),
      figureCell(c.tflops, ''),
      figureCell(c.memory_gbps, ''),
      h('td', { class: 'sub' }, [
        c.max_temperature_c != null ? `${num(c.max_temperature_c)} °C max` : null,
        c.min_sm_clock_mhz != null ? `SM ≥ ${num(c.min_sm_clock_mhz)} MHz` : null,
      ].filter(Boolean).join(' · ') || '—'),
      h('td', {}, verdictBadge(c), c.verdict !== 'ok' && c.reason ? h('div', { class: 'sub gpu-reason', text: c.reason }) : null))))));
}

function rule(cmp) {
  return `Below peers: a figure under ${Math.round(100 * cmp.threshold)}% of the median of the other cards of its model across the fleet (a verdict needs ${cmp.min_peers} of them).`;
}

// nodeGPUsView is a node's GPU figures from its latest burn-in.
export function nodeGPUsView(g) {
  if (!g.cards || !g.cards.length) {
    return empty(g.reason ? `No GPU figures: ${g.reason}` : 'No GPU figures.');
  }
  const below = g.cards.filter((c) => c.verdict === 'below peers').length;
  return [
    h('p', { class: 'sub' }, `Burn-in task ${g.task}, ended `, timeEl(g.ended), ` · GPU test ${g.outcome || '—'}`),
    below ? h('p', { class: 'alert alert-warn', id: 'gpus-below-note', text: `${below} of ${g.cards.length} GPUs below their peers.` }) : null,
    cardsTable(g.cards, false),
    h('p', { class: 'muted small', text: rule(g.comparison) }),
  ];
}

// gpusPage lists the fleet's GPUs below their peers, or every card.
export function gpusPage(root) {
  let alive = true;
  const all = h('input', { type: 'checkbox', id: 'gpus-all' });
  const status = h('span', { class: 'muted', id: 'gpus-status', 'aria-live': 'polite' });
  const body = h('div', { id: 'gpus' }, empty('Loading…'));
  clear(root,
    h('div', { class: 'page-head' }, h('h1', { text: 'GPUs' }), status),
    h('p', { class: 'muted' }, 'Each GPU of every node\'s latest burn-in, its TFLOP/s and memory bandwidth beside the median of the other cards of its model. ',
      h('label', { class: 'inline' }, all, ' show every card, not only those below their peers')),
    card('Cards', body, { id: 'gpus-card' }));

  async function load() {
    try {
      const l = await get(all.checked ? '/gpus' : '/gpus?below=true');
      if (!alive) return;
      const models = new Set(l.items.map((c) => c.model).filter(Boolean));
      status.textContent = `${l.items.length} ${all.checked ? 'cards' : 'below their peers'} · ${l.burnins} burn-ins compared`;
      clear(body, l.items.length ? [cardsTable(l.items, true), h('p', { class: 'muted small' }, rule(l.comparison), ' ',
        [...models].map((m) => chip(m)))] : empty(all.checked ? 'No burn-in has GPU figures yet.' : 'No GPU is below its peers.'));
    } catch (e) {
      clear(body, h('p', { class: 'alert alert-error', role: 'alert', text: e.message }));
    }
  }
  all.addEventListener('change', load);
  load();
  return {
    dispose() { alive = false; },
    onEvent(ev) { if (ev.kind === 'task' || ev.kind === 'transition') load(); },
  };
}

// loadNodeGPUs fills el with node id's GPU figures.
export async function loadNodeGPUs(el, id) {
  try {
    clear(el, nodeGPUsView(await get(`/nodes/${enc(id)}/gpus`)));
  } catch (e) {
    clear(el, h('p', { class: 'alert alert-error', text: e.message }));
  }
}
