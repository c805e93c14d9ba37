// The dashboard's shell: hash routes (#/overview, #/events/<id>, ...), sign-in state, the live stream.
// Each page module exports `render(main, params) -> cleanup?`.

import { session, whenSignedOut } from './api.js';
import { live } from './live.js';
import * as login from './pages/login.js';
import * as overview from './pages/overview.js';
import * as sentiment from './pages/sentiment.js';
import * as llm from './pages/llm.js';
import * as agents from './pages/agents.js';
import * as events from './pages/events.js';
import * as backtests from './pages/backtests.js';

const PAGES = { login, overview, sentiment, llm, agents, events, backtests };

const main = document.getElementById('app');
const nav = document.getElementById('nav');
const user = document.getElementById('user');
const who = document.getElementById('who');
const liveStatus = document.getElementById('live-status');

let cleanup = null;

live.onStatus((status) => {
  liveStatus.className = `live-status ${status}`;
  liveStatus.textContent = status === 'connected' ? 'live' : status;
  document.body.dataset.live = status;
});

function showChrome(signedIn) {
  nav.classList.toggle('hidden', !signedIn);
  user.classList.toggle('hidden', !signedIn);
  const current = session.get();
  who.textContent = current ? `${current.username} · ${current.role}` : '';
  document.body.dataset.role = current?.role || '';
}

function route() {
  const [name = 'overview', ...params] = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  const signedIn = Boolean(session.get());
  if (!signedIn && name !== 'login') {
    location.hash = '#/login';
    return;
  }
  if (signedIn && name === 'login') {
    location.hash = '#/overview';
    return;
  }
  const page = PAGES[name] || overview;
  showChrome(signedIn);
  if (signedIn && !live.source) live.start();
  for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.dataset.page === name);
  if (typeof cleanup === 'function') cleanup();
  cleanup = null;
  main.replaceChildren();
  document.title = `Jarvis · ${name}`;
  try {
    cleanup = page.render(main, params);
  } catch (err) {
    main.textContent = `This page failed: ${err.message}`;
  }
}

whenSignedOut(() => {
  live.stop();
  if (location.hash !== '#/login') location.hash = '#/login';
});

document.getElementById('logout').addEventListener('click', () => {
  session.clear();
  live.stop();
  location.hash = '#/login';
});

window.addEventListener('hashchange', route);
route();
