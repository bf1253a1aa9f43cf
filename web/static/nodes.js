// The node list (filters, pagination, live rows) and the rack view.

import { h, clear, $, timeEl, stateBadge, mono, select, debounce, empty, chip } from './dom.js';
import { get, getAll, post, query, enc } from './api.js';
import { hashParams, can, toast, confirmDialog } from './ui.js';

export const STATES = ['discovered', 'inspecting', 'available', 'deploying', 'active', 'cleaning', 'burnin', 'failed', 'maintenance'];
const PAGE = 50;

export function nodeLabel(n) {
  return n.name || n.id;
}

function gpuSummary(models) {
  if (!models || !models.length) return h('span', { class: 'muted', text: '—' });
  const counts = new Map();
  for (const m of models) counts.set(m, (counts.get(m) || 0) + 1);
  return [...counts].map(([m, c]) => h('span', { class: 'gpu', title: m, text: c > 1 ? `${c}× ${m}` : m }));
}

function macList(macs) {
  if (!macs || !macs.length) return h('span', { class: 'muted', text: '—' });
  const first = h('span', { class: 'mono', text: macs[0] });
  if (macs.length === 1) return first;
  return [first, h('span', { class: 'more', title: macs.slice(1).join('\n'), text: ` +${macs.length - 1}` })];
}

function place(n) {
  if (!n.rack) return h('span', { class: 'muted', text: '—' });
  return h('span', { class: 'mono', text: n.position ? `${n.rack} / U${n.position}` : n.rack });
}

// BULK are the power actions the node list applies to the selected nodes
// (POST /power); they queue behind the server's power-on limit.
const BULK = [['on', 'Power on'], ['soft-off', 'Shut down'], ['off', 'Power off'], ['cycle', 'Power cycle'], ['reset', 'Reset']];

function nodeRow(n, selected) {
  const pick = selected ? h('td', { class: 'pick' }, h('input', {
    type: 'checkbox', class: 'select-node', 'aria-label': `Select ${nodeLabel(n)}`, checked: selected.has(n.id),
    onchange: (e) => { if (e.target.checked) selected.add(n.id); else selected.delete(n.id); selected.changed(); },
  })) : null;
  return h('tr', { 'data-node': n.id, class: `row-${n.state}` }, pick,
    h('td', { class: 'name' },
      h('a', { href: `#/nodes/${enc(n.id)}`, class: 'node-link', text: nodeLabel(n) }),
      n.name ? h('div', { class: 'sub mono', text: n.id }) : null,
      n.last_error ? h('div', { class: 'sub error-text', title: n.last_error, text: n.last_error }) : null),
    h('td', {}, stateBadge(n.state), n.kind === 'vm' ? chip('vm') : null,
      n.power ? chip(`power ${n.power.state}`, n.power.state === 'unknown' ? 'warn' : '') : null),
    h('td', { class: 'mono' }, n.arch || h('span', { class: 'muted', text: '—' })),
    h('td', {}, place(n)),
    h('td', { class: 'gpus' }, gpuSummary(n.gpu_models)),
    h('td', { class: 'macs' }, macList(n.macs)),
    h('td', { class: 'nowrap' }, timeEl(n.last_seen)));
}

export function nodesPage(root) {
  const params = hashParams();
  const f = {
    q: params.get('q') || '', state: params.get('state') || '', arch: params.get('arch') || '',
    rack: params.get('rack') || '', gpu: params.get('gpu') || '',
  };
  let cursors = [''];
  let page = 0;
  let alive = true;
  let nodes = [];

  const q = h('input', { type: 'search', id: 'q', name: 'q', value: f.q, placeholder: 'Name, id, MAC, rack or tag', 'aria-keyshortcuts': '/', autocomplete: 'off' });
  const state = select('state', [['', 'Any state'], ...STATES], f.state);
  const arch = select('arch', [['', 'Any arch'], 'x86_64', 'aarch64'], f.arch);
  const rack = h('input', { type: 'text', name: 'rack', value: f.rack, placeholder: 'e.g. A01', list: 'racks-list', autocomplete: 'off', size: 8 });
  const gpu = h('input', { type: 'text', name: 'gpu', id: 'gpu-filter', value: f.gpu, placeholder: 'e.g. A100', list: 'gpu-list', autocomplete: 'off', size: 10 });
  const racksList = h('datalist', { id: 'racks-list' });
  const gpuList = h('datalist', { id: 'gpu-list' }, ['T4', 'V100', 'V100S', 'A100', 'H100'].map((m) => h('option', { value: m })));
  const reset = h('button', { type: 'button', class: 'btn btn-small btn-quiet', text: 'Clear' });
  const labelled = (text, el) => h('label', { class: 'filter' }, h('span', { text }), el);
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter nodes' },
    h('label', { class: 'filter filter-q' }, h('span', { text: 'Search' }), q, h('kbd', { class: 'kbd-hint', title: 'Press / to search', text: '/' })),
    labelled('State', state), labelled('Arch', arch), labelled('Rack', rack), labelled('GPU model', gpu), reset, racksList, gpuList);

  // Techs select nodes for a bulk power action.
  const selected = can('tech') ? new Set() : null;
  const bulkAction = select('bulk-action', BULK, 'on');
  const bulkGo = h('button', { type: 'button', class: 'btn btn-small', id: 'bulk-go', text: 'Apply to selected', disabled: true });
  const bulkCount = h('span', { class: 'muted', id: 'bulk-count' });
  const bulkBar = selected ? h('div', { class: 'bulk', id: 'bulk-bar' }, h('label', { class: 'filter' }, h('span', { text: 'Power' }), bulkAction), bulkGo, bulkCount) : null;
  if (selected) {
    selected.changed = () => {
      bulkCount.textContent = selected.size ? `${selected.size} selected` : '';
      bulkGo.disabled = selected.size === 0;
    };
  }
  const tbody = h('tbody', { id: 'nodes-body' });
  const pickAll = selected ? h('input', {
    type: 'checkbox', id: 'select-all', 'aria-label': 'Select every node on this page',
    onchange: (e) => {
      for (const n of nodes) { if (e.target.checked) selected.add(n.id); else selected.delete(n.id); }
      for (const box of tbody.querySelectorAll('.select-node')) box.checked = e.target.checked;
      selected.changed();
    },
  }) : null;
  const table = h('table', { class: 'grid', id: 'nodes-table' },
    h('caption', { class: 'sr-only', text: 'Nodes' }),
    h('thead', {}, h('tr', {}, selected ? h('th', { scope: 'col', class: 'pick' }, pickAll) : null,
      ['Name / ID', 'State', 'Arch', 'Rack / U', 'GPUs', 'MACs', 'Last seen'].map((c) => h('th', { scope: 'col', text: c })))),
    tbody);
  bulkGo.addEventListener('click', async () => {
    const ids = [...selected];
    const label = BULK.find(([id]) => id === bulkAction.value)[1];
    try {
      const res = await confirmDialog({
        title: `${label} ${ids.length} node${ids.length === 1 ? '' : 's'}?`, ok: label, danger: bulkAction.value !== 'on' && bulkAction.value !== 'soft-off',
        body: [h('p', { text: 'Power-ons start in turn, within the server\'s power.max_concurrent_on and power.on_rate; every node gets its own result and audit event.' })],
        run: () => post('/power', { action: bulkAction.value, nodes: ids }),
      });
      if (!res || res === true) return;
      const items = res.items || [];
      const failed = items.filter((r) => !r.ok);
      toast(`${label}: ${items.length - failed.length} of ${items.length} done`, failed.length ? 'warn' : 'ok');
      bulkErr.textContent = failed.map((r) => `${r.node}: ${r.error}`).join('; ');
      bulkErr.hidden = failed.length === 0;
      load();
    } catch (e) {
      bulkErr.textContent = e.message;
      bulkErr.hidden = false;
    }
  });
  const status = h('span', { class: 'muted', id: 'nodes-status', 'aria-live': 'polite' });
  const prev = h('button', { type: 'button', class: 'btn btn-small', text: '‹ Previous', disabled: true });
  const next = h('button', { type: 'button', class: 'btn btn-small', text: 'Next ›', disabled: true });
  const pageNo = h('span', { class: 'muted' });
  const errEl = h('p', { class: 'alert alert-error', role: 'alert', hidden: true });
  // The last bulk action's failures, apart from the list's own errors.
  const bulkErr = h('p', { class: 'alert alert-error', id: 'bulk-error', role: 'alert', hidden: true });

  clear(root,
    h('div', { class: 'page-head' }, h('h1', { text: 'Nodes' }), status),
    form, bulkBar, bulkErr, errEl,
    h('div', { class: 'table-wrap' }, table),
    h('div', { class: 'pager' }, prev, pageNo, next));

  let loads = 0;
  async function load() {
    const want = { ...f };
    const mine = ++loads;
    try {
      const res = await get('/nodes' + query({ ...want, limit: PAGE, cursor: cursors[page] }));
      // Only the newest request may draw: typing starts several.
      if (!alive || mine !== loads) return;
      nodes = res.items || [];
      errEl.hidden = true;
      clear(tbody, nodes.length ? nodes.map((n) => nodeRow(n, selected))
        : h('tr', {}, h('td', { colspan: selected ? 8 : 7, class: 'empty', text: 'No nodes match.' })));
      if (res.next_cursor) cursors[page + 1] = res.next_cursor;
      else cursors = cursors.slice(0, page + 1);
      next.disabled = !res.next_cursor;
      prev.disabled = page === 0;
      pageNo.textContent = `Page ${page + 1}`;
      const filtered = Object.values(want).some(Boolean);
      status.textContent = `${nodes.length}${res.next_cursor ? '+' : ''} node${nodes.length === 1 ? '' : 's'}${filtered ? ' match' : ''}`;
      for (const n of nodes) {
        if (n.rack && ![...racksList.options].some((o) => o.value === n.rack)) racksList.append(h('option', { value: n.rack }));
        for (const m of n.gpu_models || []) {
          if (![...gpuList.options].some((o) => o.value === m)) gpuList.append(h('option', { value: m }));
        }
      }
    } catch (e) {
      if (mine !== loads) return;
      errEl.textContent = e.message;
      errEl.hidden = false;
    }
  }

  const apply = () => {
    Object.assign(f, { q: q.value.trim(), state: state.value, arch: arch.value, rack: rack.value.trim(), gpu: gpu.value.trim() });
    cursors = [''];
    page = 0;
    history.replaceState(null, '', `#/nodes${query(f)}`);
    load();
  };
  const later = debounce(apply, 250);
  form.addEventListener('submit', (e) => { e.preventDefault(); apply(); });
  reset.addEventListener('click', () => {
    for (const el of [q, rack, gpu, state, arch]) el.value = '';
    apply();
  });
  for (const el of [q, rack, gpu]) el.addEventListener('input', later);
  for (const el of [state, arch]) el.addEventListener('change', apply);
  prev.addEventListener('click', () => { if (page > 0) { page--; load(); } });
  next.addEventListener('click', () => { if (cursors[page + 1]) { page++; load(); } });

  load();

  const reloadSoon = debounce(load, 500);
  return {
    dispose() { alive = false; },
    async onEvent(ev) {
      if (!ev.node_id) return;
      const row = $(`tr[data-node="${CSS.escape(ev.node_id)}"]`, tbody);
      if (!row) {
        // A node new to this page (just enrolled, say): the first page shows it.
        if (page === 0 && ev.kind === 'transition') reloadSoon();
        return;
      }
      try {
        const n = await get(`/nodes/${enc(ev.node_id)}`);
        if (!alive) return;
        const fresh = nodeRow(n, selected);
        fresh.classList.add('flash');
        row.replaceWith(fresh);
      } catch (e) {
        if (e.status === 404) row.remove();
      }
    },
  };
}

// ---------------------------------------------------------------- racks

const RACK_UNITS = 42;

function rackPanel(name, nodes) {
  const placed = nodes.filter((n) => n.position > 0).sort((a, b) => b.position - a.position);
  const unplaced = nodes.filter((n) => !(n.position > 0));
  const byUnit = new Map();
  for (const n of placed) {
    if (!byUnit.has(n.position)) byUnit.set(n.position, []);
    byUnit.get(n.position).push(n);
  }
  const top = Math.max(RACK_UNITS, ...placed.map((n) => n.position));
  const rows = [];
  let gapTop = 0;
  const flushGap = (below) => {
    if (!gapTop) return;
    const lo = below + 1;
    const n = gapTop - lo + 1;
    rows.push(h('li', { class: ['unit', 'gap', n > 2 && 'gap-wide'] },
      h('span', { class: 'u', text: n > 1 ? `${gapTop}–${lo}` : `${lo}` }),
      h('span', { class: 'slot empty', text: n > 2 ? `${n} U free` : '' })));
    gapTop = 0;
  };
  for (let u = top; u >= 1; u--) {
    const here = byUnit.get(u);
    if (!here) {
      if (!gapTop) gapTop = u;
      continue;
    }
    flushGap(u);
    rows.push(h('li', { class: 'unit' },
      h('span', { class: 'u', text: String(u) }),
      h('span', { class: 'slots' }, here.map((n) => h('a', {
        class: `slot state-${n.state}`, href: `#/nodes/${enc(n.id)}`, 'data-node': n.id,
        title: `${nodeLabel(n)} — ${n.state}${n.gpu_models && n.gpu_models.length ? ` — ${n.gpu_models.join(', ')}` : ''}`,
      }, h('span', { class: 'slot-name', text: nodeLabel(n) }),
      n.gpu_models && n.gpu_models.length ? h('span', { class: 'slot-gpu', text: `${n.gpu_models.length}× GPU` }) : null,
      h('span', { class: 'slot-state', text: n.state }))))));
  }
  flushGap(0);
  return h('section', { class: 'rack', 'aria-label': `Rack ${name}`, 'data-rack': name },
    h('header', { class: 'rack-head' }, h('h2', { text: name === '' ? 'No rack' : `Rack ${name}` }),
      h('span', { class: 'muted', text: `${nodes.length} node${nodes.length === 1 ? '' : 's'}` })),
    name === '' ? null : h('ol', { class: 'units' }, rows),
    unplaced.length ? h('div', { class: 'unplaced' },
      name === '' ? null : h('h3', { text: 'No unit set' }),
      h('ul', {}, unplaced.map((n) => h('li', {}, h('a', { class: `slot state-${n.state}`, href: `#/nodes/${enc(n.id)}`, 'data-node': n.id },
        h('span', { class: 'slot-name', text: nodeLabel(n) }), h('span', { class: 'slot-state', text: n.state })))))) : null);
}

export function racksPage(root) {
  let alive = true;
  const body = h('div', { class: 'racks', id: 'racks' }, empty('Loading…'));
  const legend = h('ul', { class: 'legend', 'aria-label': 'State colours' },
    STATES.map((s) => h('li', {}, h('span', { class: `swatch state-${s}` }), s)));
  clear(root, h('div', { class: 'page-head' }, h('h1', { text: 'Racks' }), legend), body);

  async function load() {
    try {
      const nodes = await getAll('/nodes', { limit: 1000 });
      if (!alive) return;
      const racks = new Map();
      for (const n of nodes) {
        const r = n.rack || '';
        if (!racks.has(r)) racks.set(r, []);
        racks.get(r).push(n);
      }
      const names = [...racks.keys()].sort((a, b) => (a === '') - (b === '') || a.localeCompare(b, undefined, { numeric: true }));
      clear(body, names.length ? names.map((r) => rackPanel(r, racks.get(r))) : empty('No nodes yet.'));
    } catch (e) {
      clear(body, h('p', { class: 'alert alert-error', role: 'alert', text: e.message }));
    }
  }
  load();
  const reload = debounce(load, 400);
  return {
    dispose() { alive = false; },
    onEvent(ev) { if (ev.node_id) reload(); },
  };
}
