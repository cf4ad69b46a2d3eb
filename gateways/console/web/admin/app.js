// The admin console: sign-in, the sections the role may use, hash routing.
// Every section reads the admin API; the API refuses what the role may not do
// whatever this page shows.

import { Api } from '../shared/api.js';
import { h, replace, notice } from '../shared/dom.js';
import { renderDashboard } from './dashboard.js';
import { renderMembers, renderMember } from './members.js';
import { renderOperationLog, renderWechat } from './settings.js';
import { renderDistribution } from './distribution.js';
import { consoleSession } from '../shared/session.js';

const api = new Api('wxcm.console.token');
const content = document.getElementById('content');
let session = null;

/** The sections, in menu order, with the permission each needs. */
const SECTIONS = [
  { path: 'dashboard', label: 'Dashboard', needs: 'report_read', render: (el, rest) => renderDashboard(el, api, rest) },
  { path: 'members', label: 'Members', needs: 'member_read', render: (el, rest) => (rest ? renderMember(el, api, session, rest) : renderMembers(el, api)) },
  { path: 'distribution', label: 'Distribution', needs: 'distribution_read', render: (el) => renderDistribution(el, api, session) },
  { path: 'wechat', label: 'WeChat', needs: 'wechat_read', render: (el) => renderWechat(el, api, session) },
  { path: 'operation-log', label: 'Operation log', needs: 'operation_log_read', render: (el) => renderOperationLog(el, api) },
];

function allowed(section) {
  return session && session.permissions.includes(section.needs);
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

const start = consoleSession({
  api,
  tenantKey: 'wxcm.console.tenant',
  content,
  onSession: async (s) => {
    session = s;
    await route();
  },
  onSignedOut: () => {
    session = null;
    document.getElementById('nav').hidden = true;
  },
});
window.addEventListener('hashchange', route);
start();
