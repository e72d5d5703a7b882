// The Sluice web console: asks the management API (../api/…, relative so
// that a proxy may serve the listener under a path of its own) every two
// seconds and draws queues, connections and the cluster. Every name shown
// comes from the broker and goes into the page as text (textContent), never
// as markup. The credentials live in this script's memory only: a reload
// forgets them.
'use strict';

const POLL_MS = 2000;
// Depth readings a queue's sparkline spans: about two minutes of polls.
const HISTORY = 60;
const SVG_NS = 'http://www.w3.org/2000/svg';

const state = {
  // The Authorization header to send, or null (open API, or logged out).
  authorization: null,
  // Bumped on each log-in and log-out, so that a poll answered after one
  // draws nothing and stops.
  session: 0,
  timer: null,
  polls: 0,
  // Per queue: the last poll's counters (for rates) and recent depths.
  counters: new Map(),
  depths: new Map(),
  // What the confirmation dialog's Confirm does.
  pending: null,
};

const byId = (id) => document.getElementById(id);

// One API request, answered as { status, ok, body } with body the JSON (or
// null); a broker that cannot be reached is status 0. The console header
// makes the API leave WWW-Authenticate out of a 401: the browser would
// otherwise open its own login dialog over the page's form.
async function api(method, path) {
  const headers = { 'X-Sluice-Console': '1' };
  if (state.authorization) headers.Authorization = state.authorization;
  let response;
  try {
    response = await fetch('../api/' + path, { method, headers, cache: 'no-store' });
  } catch (_) {
    return { status: 0, ok: false, body: { error: 'the broker cannot be reached' } };
  }
  const body = await response.json().catch(() => null);
  return { status: response.status, ok: response.ok, body };
}

// The API's own words for a refusal, such as "403: not permitted to
// monitor the broker".
function failure(result) {
  const reason = result.body && result.body.error ? result.body.error : 'unexpected answer';
  return result.status ? `${result.status}: ${reason}` : reason;
}

// Basic credentials as UTF-8 (btoa alone takes only Latin-1).
function basic(user, password) {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  return 'Basic ' + btoa(String.fromCharCode(...bytes));
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function button(label, onClick) {
  const node = element('button', label);
  node.type = 'button';
  node.addEventListener('click', onClick);
  return node;
}

// --- Logging in and out ---

function showLogin(message) {
  state.session += 1;
  clearTimeout(state.timer);
  state.authorization = null;
  byId('console').hidden = true;
  byId('logout').hidden = true;
  byId('who').textContent = '';
  byId('login').hidden = false;
  byId('login-error').textContent = message;
  byId('user').focus();
}

function showConsole(who, open) {
  state.session += 1;
  state.counters.clear();
  state.depths.clear();
  byId('login').hidden = true;
  byId('console').hidden = false;
  byId('open-note').hidden = !open;
  byId('logout').hidden = open;
  byId('who').textContent = who;
  byId('outcome').textContent = '';
  poll();
}

async function logIn(event) {
  event.preventDefault();
  const user = byId('user').value;
  state.authorization = basic(user, byId('password').value);
  byId('password').value = '';
  const result = await api('GET', 'queues');
  if (result.ok) {
    showConsole(user, false);
  } else {
    showLogin(result.status === 401 ? 'Wrong user name or password.' : failure(result));
  }
}

// --- Polling and drawing ---

async function poll() {
  clearTimeout(state.timer);
  const session = state.session;
  const [queues, connections, cluster] = await Promise.all([
    api('GET', 'queues'), api('GET', 'connections'), api('GET', 'cluster'),
  ]);
  if (session !== state.session) return;
  if ([queues, connections, cluster].some((result) => result.status === 401)) {
    showLogin('The broker no longer accepts these credentials.');
    return;
  }
  drawQueues(queues);
  drawConnections(connections);
  drawCluster(cluster);
  // Tests wait on this count to know a poll was drawn.
  state.polls += 1;
  document.body.dataset.polls = String(state.polls);
  // A write's own poll may have run meanwhile: one timer, not two chains.
  clearTimeout(state.timer);
  state.timer = setTimeout(poll, POLL_MS);
}

// Shows a panel's refusal in its place (a user without monitor on the
// broker is refused connections and the cluster, not the queues) and hides
// its table; answers whether there is something to draw.
function panelAnswered(section, result) {
  const ok = result.ok && result.body !== null;
  section.querySelector('.error').textContent = ok ? '' : failure(result);
  section.querySelector('table').hidden = !ok;
  return ok;
}

function drawQueues(result) {
  const section = byId('queues');
  if (!panelAnswered(section, result)) return;
  const now = performance.now();
  const names = new Set(result.body.map((queue) => queue.name));
  for (const name of state.depths.keys()) {
    if (!names.has(name)) {
      state.depths.delete(name);
      state.counters.delete(name);
    }
  }
  section.querySelector('tbody').replaceChildren(...result.body.map((q) => queueRow(q, now)));
}

function queueRow(queue, now) {
  const [publishRate, deliverRate] = rates(queue, now);
  const path = 'queues/' + encodeURIComponent(queue.name);
  const row = element('tr');
  row.dataset.queue = queue.name;
  const depth = element('td', undefined, 'sparkline');
  depth.append(sparkline(remember(queue.name, queue.messages)));
  const actions = element('td', undefined, 'actions');
  actions.append(
    button('Purge', () => confirmThen(
      `Purge the ready messages of queue “${queue.name}”?`,
      'POST', path + '/purge',
      (body) => `Purged ${body.purged} messages from queue “${queue.name}”.`)),
    button('Delete', () => confirmThen(
      `Delete queue “${queue.name}” and all its messages? Its consumers are detached.`,
      'DELETE', path,
      () => `Deleted queue “${queue.name}”.`)),
  );
  row.append(
    element('td', queue.name, 'name'),
    element('td', queue.messages, 'number ready'),
    element('td', queue.messages_unsettled, 'number unsettled'),
    element('td', queue.consumers, 'number consumers'),
    element('td', publishRate, 'number'),
    element('td', deliverRate, 'number'),
    element('td', queue.leader ?? 'none', 'number'),
    depth,
    actions,
  );
  return row;
}

// Messages a second published and delivered since the last poll; blank on
// the first sight of a queue, and after a counter went back (the node
// restarted and counts again from zero).
function rates(queue, now) {
  const before = state.counters.get(queue.name);
  state.counters.set(queue.name, { published: queue.published, delivered: queue.delivered, at: now });
  if (!before || now <= before.at) return ['', ''];
  const seconds = (now - before.at) / 1000;
  const rate = (count, was) => (count >= was ? ((count - was) / seconds).toFixed(1) : '');
  return [rate(queue.published, before.published), rate(queue.delivered, before.delivered)];
}

function remember(name, depth) {
  const depths = state.depths.get(name) || [];
  depths.push(depth);
  if (depths.length > HISTORY) depths.shift();
  state.depths.set(name, depths);
  return depths;
}

// The depths as a line, the newest at the right edge, scaled to the
// highest of them; its tooltip gives the figures.
function sparkline(depths) {
  const width = 120;
  const height = 24;
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('width', width);
  svg.setAttribute('height', height);
  const highest = Math.max(1, ...depths);
  const step = width / (HISTORY - 1);
  const points = depths.map((depth, i) => {
    const x = width - (depths.length - 1 - i) * step;
    const y = height - 1 - (depth / highest) * (height - 2);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  // The whole span as a band, so that the part not yet read shows as such.
  const band = document.createElementNS(SVG_NS, 'rect');
  band.setAttribute('width', width);
  band.setAttribute('height', height);
  const line = document.createElementNS(SVG_NS, 'polyline');
  line.setAttribute('points', points.join(' '));
  const title = document.createElementNS(SVG_NS, 'title');
  title.textContent = `depth ${depths[depths.length - 1]}, at most ${highest} ` +
    `over the last ${depths.length} readings`;
  svg.append(title, band, line);
  return svg;
}

function drawConnections(result) {
  const section = byId('connections');
  if (!panelAnswered(section, result)) return;
  const rows = result.body.map((connection) => {
    const row = element('tr');
    row.dataset.connection = String(connection.id);
    const actions = element('td', undefined, 'actions');
    actions.append(button('Close', () => confirmThen(
      `Close connection ${connection.id} (${connection.peer})?`,
      'DELETE', 'connections/' + connection.id,
      () => `Closed connection ${connection.id}.`)));
    row.append(
      element('td', connection.id, 'number'),
      element('td', connection.peer),
      element('td', connection.listener),
      element('td', new Date(connection.opened_unix_ms).toLocaleString()),
      actions,
    );
    return row;
  });
  section.querySelector('tbody').replaceChildren(...rows);
}

function drawCluster(result) {
  const section = byId('cluster');
  if (!panelAnswered(section, result)) {
    section.querySelector('.summary').textContent = '';
    return;
  }
  const cluster = result.body;
  section.querySelector('.summary').textContent =
    `Node ${cluster.node_id}, ${cluster.clustered ? 'clustered' : 'a single node'}; ` +
    `members ${cluster.members.join(', ')}; snapshots ${cluster.snapshots}`;
  const rows = cluster.groups.map((group) => {
    const row = element('tr');
    row.append(
      element('td', group.group, 'number'),
      element('td', group.leader ?? 'none', 'number'),
      element('td', group.applied_index, 'number'),
      element('td', group.rejoining ? 'yes' : 'no'),
      // Raft's view, in a cluster only; the lags on the group's leader only.
      element('td', group.raft?.term ?? '-', 'number'),
      element('td', group.raft?.commit_index ?? '-', 'number'),
      element('td', followerLags(group.raft)),
    );
    return row;
  });
  section.querySelector('tbody').replaceChildren(...rows);
}

// Each follower's lag as `node: entries`, or '-' where this node does not
// lead the group (only a leader tracks its followers).
function followerLags(raft) {
  const followers = raft?.followers ?? [];
  if (followers.length === 0) {
    return '-';
  }
  return followers.map((f) => `${f.node}: ${f.lag_entries}`).join(', ');
}

// --- Confirmation before every write ---

// Asks `question`; on Confirm sends the request and reports its outcome:
// `done(body)` or the API's refusal.
function confirmThen(question, method, path, done) {
  byId('confirm-text').textContent = question;
  state.pending = async () => {
    const result = await api(method, path);
    const outcome = byId('outcome');
    outcome.textContent = result.ok ? done(result.body) : 'Refused: ' + failure(result);
    outcome.className = result.ok ? 'done' : 'error';
    poll();
  };
  byId('confirm').showModal();
}

function wire() {
  byId('login').addEventListener('submit', logIn);
  byId('logout').addEventListener('click', () => showLogin(''));
  const dialog = byId('confirm');
  // Escape closes the dialog too: whatever closes it forgets the request.
  dialog.addEventListener('close', () => { state.pending = null; });
  byId('confirm-cancel').addEventListener('click', () => dialog.close());
  byId('confirm-ok').addEventListener('click', () => {
    const pending = state.pending;
    dialog.close();
    if (pending) pending();
  });
}

// An API that answers without credentials has no accounts: no form then.
async function start() {
  wire();
  const result = await api('GET', 'queues');
  if (result.ok) {
    showConsole('open broker', true);
  } else {
    showLogin(result.status === 401 ? '' : failure(result));
  }
}

start();
