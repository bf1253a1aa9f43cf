// The images catalog, the audit log, and administration (users, tokens).

import { h, clear, timeEl, fmtTime, bytes, field, select, card, empty } from './dom.js';
import { get, getAll, post, del, enc, query } from './api.js';
import { can, toast, confirmDialog } from './ui.js';

function errorBox(e) {
  return h('p', { class: 'alert alert-error', role: 'alert', text: e.message || String(e) });
}

function gridTable(id, heads, rows, emptyText) {
  return h('div', { class: 'table-wrap' }, h('table', { class: 'grid', id },
    h('thead', {}, h('tr', {}, heads.map((c) => h('th', { scope: 'col', text: c })))),
    h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: heads.length, class: 'empty', text: emptyText })))));
}

async function confirmDelete(what, detail, path, after) {
  try {
    const ok = await confirmDialog({ title: `Delete ${what}?`, ok: 'Delete', danger: true, body: [h('p', { text: detail })], run: () => del(path) });
    if (ok) { toast(`Deleted ${what}`); after(); }
  } catch (e) {
    toast(e.message, 'error');
  }
}

// ---------------------------------------------------------------- images

export function imagesPage(root) {
  let alive = true;
  const body = h('div', {}, empty('Loading…'));
  clear(root, h('div', { class: 'page-head' }, h('h1', { text: 'Images' }),
    h('span', { class: 'muted', text: 'Import images with rackboot image import.' })), body);
  async function load() {
    try {
      const items = (await get('/images')).items || [];
      if (!alive) return;
      const heads = ['Name', 'Arch', 'Format', 'Size', 'SHA-256', 'Source', 'Created'];
      if (can('admin')) heads.push('');
      clear(body, gridTable('images-table', heads, items.map((im) => h('tr', { 'data-image': im.name },
        h('td', { class: 'name', text: im.name }),
        h('td', { class: 'mono', text: im.arch || '—' }),
        h('td', { class: 'mono', text: im.format || '—' }),
        h('td', { class: 'nowrap num', text: bytes(im.size) }),
        h('td', { class: 'mono small', title: im.sha256 || '', text: im.sha256 ? `${im.sha256.slice(0, 16)}…` : '—' }),
        h('td', { class: 'small ellipsis', title: im.source || '', text: im.source || '—' }),
        h('td', { class: 'nowrap' }, timeEl(im.created)),
        can('admin') ? h('td', { class: 'row-actions' }, h('button', {
          type: 'button', class: 'btn btn-small btn-danger-quiet', text: 'Delete', 'aria-label': `Delete image ${im.name}`,
          onclick: () => confirmDelete(`image ${im.name}`, 'The image file and its catalog entry are removed. Nodes already deployed with it are not touched.', `/images/${enc(im.name)}`, load),
        })) : null)), 'No images yet.'));
    } catch (e) {
      clear(body, errorBox(e));
    }
  }
  load();
  return { dispose() { alive = false; } };
}

// ---------------------------------------------------------------- events

const shortID = (id) => (id.length > 12 ? `${id.slice(0, 8)}…` : id);

// actorText names a node agent by its node's name.
function actorText(actor, names) {
  const m = /^agent:(.+)$/.exec(actor || '');
  return m && names.has(m[1]) ? `agent:${names.get(m[1])}` : actor || '';
}

function eventRow(ev, fresh, names) {
  const name = ev.node_id && names.get(ev.node_id);
  return h('tr', { 'data-seq': ev.seq, class: fresh ? 'flash' : null },
    h('td', { class: 'num mono', text: String(ev.seq) }),
    h('td', { class: 'nowrap', title: fmtTime(ev.time), text: fmtTime(ev.time) }),
    h('td', { class: 'nowrap' }, ev.node_id
      ? h('a', { href: `#/nodes/${enc(ev.node_id)}`, class: name ? '' : 'mono', title: ev.node_id, text: name || shortID(ev.node_id) })
      : h('span', { class: 'muted', text: '—' })),
    h('td', {}, h('span', { class: `ev-kind kind-${ev.kind}`, text: ev.kind })),
    h('td', { class: 'nowrap' }, ev.from || ev.to ? [ev.from || '', ev.from && ev.to ? ' → ' : '', ev.to || ''] : ''),
    h('td', { text: ev.message || '' }),
    h('td', { class: 'small', text: ev.reason || '' }),
    h('td', { class: 'mono small', title: ev.actor || '', text: actorText(ev.actor, names) }));
}

export function eventsPage(root) {
  let alive = true;
  const tbody = h('tbody', {});
  const status = h('span', { class: 'muted', 'aria-live': 'polite' });
  clear(root, h('div', { class: 'page-head' }, h('h1', { text: 'Audit log' }), status),
    h('div', { class: 'table-wrap' }, h('table', { class: 'grid', id: 'events-table' },
      h('thead', {}, h('tr', {}, ['#', 'Time', 'Node', 'Kind', 'Transition', 'Message', 'Reason', 'Actor'].map((c) => h('th', { scope: 'col', text: c })))),
      tbody)));
  const seen = new Set();
  const names = new Map();
  const add = (ev, fresh) => {
    if (seen.has(ev.seq)) return;
    seen.add(ev.seq);
    tbody.prepend(eventRow(ev, fresh, names));
    while (tbody.children.length > 500) tbody.lastChild.remove();
  };
  (async () => {
    try {
      const [evs, nodes] = await Promise.all([
        get('/events' + query({ order: 'desc', limit: 500 })).then((p) => (p.items || []).reverse()),
        getAll('/nodes', { limit: 1000 }).catch(() => []),
      ]);
      if (!alive) return;
      for (const n of nodes) if (n.name) names.set(n.id, n.name);
      for (const ev of evs.slice(-500)) add(ev, false);
      status.textContent = `newest ${evs.length}, live`;
    } catch (e) {
      root.append(errorBox(e));
    }
  })();
  return { dispose() { alive = false; }, onEvent(ev) { add(ev, true); } };
}

// ---------------------------------------------------------------- admin

const ROLES = ['readonly', 'tech', 'admin'];
const rolesHint = () => h('p', { class: 'muted small roles-hint', text: 'readonly sees everything and changes nothing; tech also runs node actions and edits nodes; admin also deletes nodes and images and manages users and tokens.' });

function usersCard() {
  const body = h('div', {});
  const name = h('input', { name: 'name', required: true, autocomplete: 'off', pattern: '[A-Za-z0-9._@-]+', maxlength: 64 });
  const pass = h('input', { name: 'password', type: 'password', required: true, autocomplete: 'new-password', minlength: 8, placeholder: 'at least 8 characters' });
  const role = select('role', ROLES, 'tech');
  const err = h('p', { class: 'alert alert-error', role: 'alert', hidden: true });
  const form = h('form', { class: 'inline-form', id: 'user-form', 'aria-label': 'Add a user' },
    field('User name', name), field('Password', pass), field('Role', role),
    h('button', { type: 'submit', class: 'btn btn-primary', text: 'Add user' }), err, rolesHint());
  async function load() {
    try {
      const items = (await get('/users')).items || [];
      clear(body, gridTable('users-table', ['Name', 'Role', 'Created', ''], items.map((u) => h('tr', { 'data-user': u.name },
        h('td', { class: 'name', text: u.name }),
        h('td', {}, h('span', { class: `chip chip-role role-${u.role}`, text: u.role })),
        h('td', { class: 'nowrap' }, timeEl(u.created)),
        h('td', { class: 'row-actions' }, h('button', {
          type: 'button', class: 'btn btn-small btn-danger-quiet', text: 'Delete', 'aria-label': `Delete user ${u.name}`,
          onclick: () => confirmDelete(`user ${u.name}`, 'The user can no longer log in; their sessions and API tokens end now.', `/users/${enc(u.name)}`, load),
        })))), 'No users.'));
    } catch (e) { clear(body, errorBox(e)); }
  }
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.hidden = true;
    try {
      await post('/users', { name: name.value.trim(), password: pass.value, role: role.value });
      toast(`User ${name.value.trim()} saved`);
      form.reset();
      load();
    } catch (ex) { err.textContent = ex.message; err.hidden = false; }
  });
  load();
  return card('Users', [body, h('h3', { class: 'form-title', text: 'Add a user (or set an existing user’s role and password)' }), form], { id: 'users' });
}

function tokensCard() {
  const body = h('div', {});
  const secretBox = h('div', { id: 'token-secret', hidden: true });
  const name = h('input', { name: 'name', required: true, autocomplete: 'off', maxlength: 64, placeholder: 'e.g. ci-pipeline' });
  const role = select('role', ROLES, 'readonly');
  const ttl = select('ttl', [['', 'never'], ['24h', '1 day'], ['720h', '30 days'], ['2160h', '90 days'], ['8760h', '1 year']], '');
  const err = h('p', { class: 'alert alert-error', role: 'alert', hidden: true });
  const form = h('form', { class: 'inline-form', id: 'token-form', 'aria-label': 'Create an API token' },
    field('Name', name), field('Role', role), field('Expires after', ttl),
    h('button', { type: 'submit', class: 'btn btn-primary', text: 'Create token' }), err, rolesHint());
  async function load() {
    try {
      const items = (await get('/tokens')).items || [];
      clear(body, gridTable('tokens-table', ['Name', 'ID', 'Role', 'User', 'Created', 'Expires', ''], items.map((t) => h('tr', { 'data-token': t.id },
        h('td', { class: 'name', text: t.name || '—' }),
        h('td', { class: 'mono small', title: t.id, text: t.id.length > 12 ? `${t.id.slice(0, 8)}…` : t.id }),
        h('td', {}, h('span', { class: `chip chip-role role-${t.role}`, text: t.role })),
        h('td', { text: t.user || '—' }),
        h('td', { class: 'nowrap' }, timeEl(t.created)),
        h('td', { class: 'nowrap' }, t.expires ? timeEl(t.expires, false) : h('span', { class: 'muted', text: 'never' })),
        h('td', { class: 'row-actions' }, h('button', {
          type: 'button', class: 'btn btn-small btn-danger-quiet', text: 'Revoke', 'aria-label': `Revoke token ${t.name || t.id}`,
          onclick: () => confirmDelete(`token ${t.name || t.id}`, 'Programs using this token are refused from now on.', `/tokens/${enc(t.id)}`, load),
        })))), 'No API tokens.'));
    } catch (e) { clear(body, errorBox(e)); }
  }
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.hidden = true;
    try {
      const res = await post('/tokens', { name: name.value.trim(), role: role.value, ...(ttl.value ? { ttl: ttl.value } : {}) });
      const secret = h('input', { class: 'mono secret', readonly: true, value: res.secret, 'aria-label': 'Token secret', size: 40 });
      const copy = h('button', { type: 'button', class: 'btn btn-small', text: 'Copy' });
      copy.addEventListener('click', async () => {
        secret.select();
        try { await navigator.clipboard.writeText(res.secret); toast('Copied'); } catch { document.execCommand?.('copy'); }
      });
      clear(secretBox, h('div', { class: 'alert alert-ok' },
        h('p', {}, h('strong', { text: `Token “${res.token?.name || name.value}” created. ` }), 'Copy its secret now: it is not shown again.'),
        h('div', { class: 'secret-row' }, secret, copy,
          h('button', { type: 'button', class: 'btn btn-small btn-quiet', text: 'Done', onclick: () => { secretBox.hidden = true; clear(secretBox); } }))));
      secretBox.hidden = false;
      secret.focus();
      secret.select();
      form.reset();
      load();
    } catch (ex) { err.textContent = ex.message; err.hidden = false; }
  });
  load();
  return card('API tokens', [secretBox, body, h('h3', { class: 'form-title', text: 'Create a token' }), form], { id: 'tokens' });
}

export function adminPage(root) {
  if (!can('admin')) {
    clear(root, h('h1', { text: 'Admin' }), h('p', { class: 'alert alert-error', text: 'Only administrators manage users and tokens.' }));
    return null;
  }
  clear(root, h('div', { class: 'page-head' }, h('h1', { text: 'Administration' })),
    h('div', { class: 'admin-grid' }, usersCard(), tokensCard()));
  return null;
}
