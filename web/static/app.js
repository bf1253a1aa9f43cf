// rackboot's web UI: the shell (session, router, live events, dialogs).
// Pages live in their own modules and are hash routes: #/nodes,
// #/nodes/ID, #/racks, #/gpus, #/hypervisors, #/vms, #/vms/ID, #/images,
// #/events, #/admin.

import { h, clear, $, $$ } from './dom.js';
import { get, post, setCSRF, setUnauthorizedHandler } from './api.js';
import { session, can, toast } from './ui.js';
import { nodesPage, racksPage } from './nodes.js';
import { nodePage } from './node.js';
import { imagesPage, eventsPage, adminPage } from './admin.js';
import { hypervisorsPage, vmsPage, vmPage } from './vms.js';
import { gpusPage } from './gpus.js';

let view = null;
let stream = null;

// ---------------------------------------------------------------- live events

function setLive(on, text) {
  const el = $('#live');
  el.classList.toggle('on', on);
  el.querySelector('.live-text').textContent = text || (on ? 'live' : 'offline');
}

function startStream() {
  stopStream();
  const es = new EventSource('/api/v1/events/stream');
  stream = es;
  es.addEventListener('open', () => setLive(true));
  es.addEventListener('event', (m) => {
    let ev;
    try { ev = JSON.parse(m.data); } catch { return; }
    document.dispatchEvent(new CustomEvent('rackboot:event', { detail: ev }));
    if (view && view.onEvent) view.onEvent(ev);
  });
  es.addEventListener('error', () => {
    setLive(false, es.readyState === EventSource.CLOSED ? 'offline' : 'reconnecting');
    if (es.readyState === EventSource.CLOSED && stream === es) {
      // The stream refuses for good only when the session is gone.
      setTimeout(async () => {
        if (stream !== es) return;
        try {
          await get('/whoami');
          startStream();
        } catch { /* the 401 handler shows the login form */ }
      }, 3000);
    }
  });
}

function stopStream() {
  if (stream) stream.close();
  stream = null;
  setLive(false);
}

// ---------------------------------------------------------------- login

function showLogin(message) {
  session.me = null;
  setCSRF('');
  stopStream();
  disposeView();
  $('#topbar').hidden = true;
  document.title = 'Log in · rackboot';
  const user = h('input', { id: 'login-user', name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false' });
  const pass = h('input', { id: 'login-pass', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const err = h('p', { class: 'alert alert-error', id: 'login-error', role: 'alert', hidden: !message, text: message || '' });
  const btn = h('button', { type: 'submit', class: 'btn btn-primary btn-block', id: 'login-submit', text: 'Log in' });
  const form = h('form', { class: 'login-form', id: 'login-form', 'aria-labelledby': 'login-title' },
    h('div', { class: 'login-brand' }, h('img', { src: 'favicon.svg', alt: '', width: 36, height: 36 }),
      h('div', {}, h('h1', { id: 'login-title', text: 'rackboot' }), h('p', { class: 'muted', text: 'Network boot and provisioning' }))),
    err,
    h('div', { class: 'field' }, h('label', { for: 'login-user', text: 'User name' }), user),
    h('div', { class: 'field' }, h('label', { for: 'login-pass', text: 'Password' }), pass),
    btn);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    btn.disabled = true;
    err.hidden = true;
    try {
      const who = await post('/login', { username: user.value, password: pass.value });
      startSession(who);
    } catch (ex) {
      err.textContent = ex.status === 401 ? 'Wrong user name or password.' : ex.message;
      err.hidden = false;
      btn.disabled = false;
      pass.select();
    }
  });
  clear($('#main'), h('div', { class: 'login-wrap' }, form));
  user.focus();
}

function startSession(who) {
  session.me = who;
  setCSRF(who.csrf_token);
  $('#topbar').hidden = false;
  clear($('#who'), h('span', { class: 'who-name', text: who.user || who.actor || '' }), ' ',
    h('span', { class: `chip chip-role role-${who.role}`, text: who.role }));
  for (const el of $$('[data-role]')) el.hidden = !can(el.dataset.role);
  startStream();
  if (!location.hash.startsWith('#/')) history.replaceState(null, '', '#/nodes');
  route();
}

async function logout() {
  try {
    await post('/logout');
  } catch (e) {
    if (e.status !== 401) toast(e.message, 'error');
  }
  // The next person to log in starts from the node list.
  history.replaceState(null, '', '#/nodes');
  showLogin();
}

// ---------------------------------------------------------------- router

function disposeView() {
  if (view && view.dispose) view.dispose();
  view = null;
}

const routes = [
  [/^\/nodes\/?$/, 'nodes', nodesPage],
  [/^\/nodes\/([^/]+)$/, 'nodes', nodePage],
  [/^\/racks\/?$/, 'racks', racksPage],
  [/^\/gpus\/?$/, 'gpus', gpusPage],
  [/^\/hypervisors\/?$/, 'hypervisors', hypervisorsPage],
  [/^\/vms\/?$/, 'vms', vmsPage],
  [/^\/vms\/([^/]+)$/, 'vms', vmPage],
  [/^\/images\/?$/, 'images', imagesPage],
  [/^\/events\/?$/, 'events', eventsPage],
  [/^\/admin\/?$/, 'admin', adminPage],
];

function route() {
  if (!session.me) return;
  const hash = location.hash.startsWith('#/') ? location.hash.slice(1) : '/nodes';
  const path = hash.split('?')[0];
  disposeView();
  const main = $('#main');
  for (const [re, nav, page] of routes) {
    const m = path.match(re);
    if (!m) continue;
    for (const a of $$('.mainnav a')) {
      if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    const root = h('div', { class: 'page' });
    clear(main, root);
    view = page(root, ...m.slice(1).map(decodeURIComponent)) || null;
    return;
  }
  clear(main, h('div', { class: 'page' }, h('h1', { text: 'Not found' }),
    h('p', {}, 'No page at ', h('code', { text: path }), '. ', h('a', { href: '#/nodes', text: 'Back to the nodes' }))));
}

// ---------------------------------------------------------------- start

function keyboard(e) {
  if (e.key !== '/' || e.ctrlKey || e.metaKey || e.altKey) return;
  const t = e.target;
  if (t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement || t.isContentEditable) return;
  if (!session.me || $('#confirm').open) return;
  e.preventDefault();
  const q = $('#q');
  if (q) { q.focus(); q.select(); return; }
  location.hash = '#/nodes';
  setTimeout(() => $('#q')?.focus(), 50);
}

async function boot() {
  setUnauthorizedHandler(() => { if (session.me) showLogin('Your session has ended. Log in again.'); });
  $('#logout').addEventListener('click', logout);
  $('.skip').addEventListener('click', (e) => { e.preventDefault(); $('#main').focus(); });
  $('#confirm-cancel').addEventListener('click', (e) => { e.preventDefault(); $('#confirm').close('cancel'); });
  window.addEventListener('hashchange', route);
  document.addEventListener('keydown', keyboard);
  try {
    const who = await get('/whoami', { quiet401: true });
    if (!who.csrf_token) {
      // A bearer token from elsewhere is not a web session.
      showLogin();
      return;
    }
    startSession(who);
  } catch (e) {
    showLogin(e.status === 401 ? '' : e.message);
  }
}

boot();
