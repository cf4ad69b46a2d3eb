// The admin console: sign-in, the sections the role may use, hash routing.
// Every section reads the admin API; the API refuses what the role may not do
// whatever this page shows.

import { Api } from '../shared/api.js';
import { h, replace, notice, field } from '../shared/dom.js';
import { renderDashboard } from './dashboard.js';
import { renderMembers, renderMember } from './members.js';
import { renderOperationLog, renderWechat } from './settings.js';

const api = new Api('wxcm.console.token');
const content = document.getElementById('content');
let session = null;

/** The sections, in menu order, with the permission each needs. */
const SECTIONS = [
  { path: 'dashboard', label: 'Dashboard', needs: 'report_read', render: (el, rest) => renderDashboard(el, api, rest) },
  { path: 'members', label: 'Members', needs: 'member_read', render: (el, rest) => (rest ? renderMember(el, api, session, rest) : renderMembers(el, api)) },
  { path: 'wechat', label: 'WeChat', needs: 'wechat_read', render: (el) => renderWechat(el, api, session) },
  { path: 'operation-log', label: 'Operation log', needs: 'operation_log_read', render: (el) => renderOperationLog(el, api) },
];

function allowed(section) {
  return session && session.permissions.includes(section.needs);
}

function showLogin(message) {
  session = null;
  document.getElementById('who').hidden = true;
  document.getElementById('nav').hidden = true;
  const [tenantField, tenant] = field('Tenant', { name: 'tenant', autocomplete: 'organization', required: true, value: localStorage.getItem('wxcm.console.tenant') ?? '' });
  const [userField, user] = field('Username', { name: 'username', autocomplete: 'username', required: true });
  const [passwordField, password] = field('Password', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const status = h('div', { 'aria-live': 'polite' }, message ? notice('error', message) : null);
  const submit = h('button', { type: 'submit' }, 'Sign in');
  const form = h('form', { class: 'panel login', 'aria-labelledby': 'login-title' },
    h('h2', { id: 'login-title' }, 'Sign in'), tenantField, userField, passwordField, submit, status);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    submit.disabled = true;
    replace(status, notice('loading', 'Signing in…'));
    try {
      await api.login(tenant.value.trim(), user.value.trim(), password.value);
      localStorage.setItem('wxcm.console.tenant', tenant.value.trim());
      await start();
    } catch (error) {
      replace(status, notice('error', error.status === 401 ? 'Wrong tenant, username or password.' : error.message));
      submit.disabled = false;
    }
  });
  replace(content, form);
  (tenant.value ? user : tenant).focus();
}

function renderNav(current) {
  const nav = document.getElementById('nav');
  replace(nav, SECTIONS.filter(allowed).map((s) =>
    h('a', { href: `#/${s.path}`, 'aria-current': s.path === current ? 'page' : null }, s.label)),
  session.permissions.includes('cash_deposit') ? h('a', { href: '/staff/' }, 'Staff console') : null);
  nav.hidden = false;
}

async function route() {
  if (!session) return;
  const [, path = '', ...rest] = (location.hash || '#/').split('/');
  const visible = SECTIONS.filter(allowed);
  const section = visible.find((s) => s.path === path);
  if (!section) {
    if (visible.length > 0) {
      location.replace(`#/${visible[0].path}`);
    } else {
      renderNav('');
      replace(content, notice('empty', 'Your role has no console section. Staff use the staff console.'), h('p', {}, h('a', { href: '/staff/' }, 'Open the staff console')));
    }
    return;
  }
  renderNav(section.path);
  document.title = `${section.label} · wxcm console`;
  await section.render(content, rest.join('/'));
}

async function start() {
  if (!api.token) return showLogin();
  try {
    session = await api.get('/session');
  } catch (error) {
    return showLogin(error.status === 401 ? 'Your session ended; please sign in again.' : error.message);
  }
  document.getElementById('tenant-name').textContent = session.tenant_name;
  document.getElementById('user-name').textContent = `${session.username} (${session.role})`;
  document.getElementById('who').hidden = false;
  await route();
}

document.getElementById('logout').addEventListener('click', async () => {
  try {
    await api.logout();
  } finally {
    showLogin();
  }
});
window.addEventListener('hashchange', route);
window.addEventListener('wxcm:signed-out', () => showLogin('Your session ended; please sign in again.'));
start();
