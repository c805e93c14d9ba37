// Sign in with username and password (and a TOTP code for admin actions).

import { login } from '../api.js';
import { h } from '../dom.js';

export function render(main) {
  const username = h('input', { id: 'username', name: 'username', autocomplete: 'username', required: true });
  const password = h('input', {
    id: 'password',
    name: 'password',
    type: 'password',
    autocomplete: 'current-password',
    required: true,
  });
  const totp = h('input', {
    id: 'totp',
    name: 'totp',
    inputmode: 'numeric',
    autocomplete: 'one-time-code',
    placeholder: 'only for admin actions',
  });
  const error = h('div', { class: 'error-text', role: 'alert' });
  const submit = h('button', { class: 'primary', type: 'submit', text: 'Sign in' });
  const form = h(
    'form',
    { class: 'panel login', id: 'login-form' },
    h('h1', { text: 'Sign in to Jarvis' }),
    h('label', { for: 'username', text: 'Username' }),
    username,
    h('label', { for: 'password', text: 'Password' }),
    password,
    h('label', { for: 'totp', text: 'Authenticator code (optional)' }),
    totp,
    submit,
    error,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    error.textContent = '';
    submit.disabled = true;
    try {
      await login(username.value.trim(), password.value, totp.value.trim());
      location.hash = '#/overview';
    } catch (err) {
      error.textContent = err.status === 401 ? 'Wrong username or password.' : err.message;
    } finally {
      submit.disabled = false;
    }
  });
  main.append(h('div', { class: 'login-wrap' }, form));
  username.focus();
}
