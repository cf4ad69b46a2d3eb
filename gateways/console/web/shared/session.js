// Sign-in, the session and sign-out, the same for both consoles: each gives
// its Api (its own sessionStorage key), where it remembers the tenant, and
// what to render for a live session (`onSession(session)`) and before one
// (`onSignedOut()`, to hide its navigation).

import { h, replace, notice, field } from './dom.js';

export function consoleSession({ api, tenantKey, content, onSession, onSignedOut = () => {} }) {
  function showLogin(message) {
    onSignedOut();
    document.getElementById('who').hidden = true;
    const [tenantField, tenant] = field('Tenant', { name: 'tenant', autocomplete: 'organization', required: true, value: localStorage.getItem(tenantKey) ?? '' });
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
        localStorage.setItem(tenantKey, tenant.value.trim());
        await start();
      } catch (error) {
        replace(status, notice('error', error.status === 401 ? 'Wrong tenant, username or password.' : error.message));
        submit.disabled = false;
      }
    });
    replace(content, form);
    (tenant.value ? user : tenant).focus();
  }

  async function start() {
    if (!api.token) return showLogin();
    let session;
    try {
      session = await api.get('/session');
    } catch (error) {
      return showLogin(error.status === 401 ? 'Your session ended; please sign in again.' : error.message);
    }
    document.getElementById('tenant-name').textContent = session.tenant_name;
    document.getElementById('user-name').textContent = `${session.username} (${session.role})`;
    document.getElementById('who').hidden = false;
    await onSession(session);
  }

  document.getElementById('logout').addEventListener('click', async () => {
    try {
      await api.logout();
    } finally {
      showLogin();
    }
  });
  window.addEventListener('wxcm:signed-out', () => showLogin('Your session ended; please sign in again.'));
  return start;
}
