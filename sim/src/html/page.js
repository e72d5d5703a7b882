// Draws the timeline model (sim/src/timeline.rs) that the page carries as
// JSON. Every string from the run goes in through textContent or an
// attribute, never as markup.
'use strict';

const NS = 'http://www.w3.org/2000/svg';
const LANE_H = 28;
const AXIS_H = 22;
const LABEL_W = 120;
// One tick per this many pixels per lane and kind: ten thousand events
// stay a few thousand elements at any zoom.
const BUCKET_PX = 3;
// Within a lane: rare events on top, sends and deliveries in the middle,
// outcomes and settles below, connections and leaderships at the bottom.
const ROW = {
  start: 0, stop: 0, restart: 0, nemesis: 0, leader: 0, other: 0,
  connect: 0, lost: 0, closed: 0,
  send: 1, resend: 1, delivered: 1, redelivered: 1,
  accepted: 2, refused: 2, settled: 2,
};
const RARE = new Set(['start', 'stop', 'restart', 'nemesis', 'leader', 'other', 'connect', 'lost']);
const LEGEND = Object.keys(ROW);
const FAULT_CLASSES = ['net', 'cut', 'disk', 'process', 'clock'];
// A listed event list is cut here; the count says how many there were.
const LIST_MAX = 300;

const data = JSON.parse(document.getElementById('timeline-data').textContent);
const tl = data.timeline;
const texts = data.texts;
const markByIndex = new Map(tl.marks.map((m) => [m.index, m]));
const state = { zoom: 1, buckets: [], selected: null };

function svg(name, attrs, parent) {
  const node = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attrs)) {
    node.setAttribute(key, String(value));
  }
  if (parent) parent.appendChild(node);
  return node;
}

function laneY(lane) {
  return AXIS_H + lane * LANE_H;
}

function seconds(us) {
  return (us / 1e6).toFixed(3) + 's';
}

function chartWidth() {
  const available = document.getElementById('chart').clientWidth - LABEL_W - 2;
  return Math.max(400, available) * state.zoom;
}

// A tick every 1, 2 or 5 × 10^n µs, the first at least 90 px apart.
function axisStep(scale) {
  for (let magnitude = 1; magnitude < 1e15; magnitude *= 10) {
    for (const m of [1, 2, 5]) {
      if (m * magnitude * scale >= 90) return m * magnitude;
    }
  }
  return 1e15;
}

function drawAxis(root, scale, height) {
  const g = svg('g', { class: 'axis' }, root);
  const step = axisStep(scale);
  for (let t = 0; t <= tl.end; t += step) {
    const x = t * scale;
    svg('line', { x1: x, x2: x, y1: AXIS_H - 4, y2: height }, g);
    svg('text', { x: x + 2, y: AXIS_H - 8 }, g).textContent = seconds(t);
  }
}

function drawLanes(root, width) {
  tl.lanes.forEach((lane, i) => {
    svg('rect', { class: 'lane-bg' + (i % 2 ? ' odd' : ''), x: 0, y: laneY(i), width, height: LANE_H }, root);
  });
}

function drawLabels() {
  const labels = document.getElementById('labels');
  labels.replaceChildren();
  const height = laneY(tl.lanes.length);
  labels.setAttribute('width', LABEL_W);
  labels.setAttribute('height', height);
  tl.lanes.forEach((lane, i) => {
    svg('rect', { class: 'lane-bg' + (i % 2 ? ' odd' : ''), x: 0, y: laneY(i), width: LABEL_W, height: LANE_H }, labels);
    const text = svg('text', { class: 'lane-name ' + lane.kind, x: 6, y: laneY(i) + LANE_H / 2 }, labels);
    text.textContent = lane.name;
  });
}

function drawHeal(root, scale, height) {
  const g = svg('g', { class: 'heal' }, root);
  const x = tl.faults_end * scale;
  svg('line', { x1: x, x2: x, y1: AXIS_H, y2: height }, g);
  svg('text', { x: x + 3, y: AXIS_H + 10 }, g).textContent = 'faults healed';
}

function bandEnd(band) {
  return band.end === null ? tl.end : band.end;
}

function drawBands(root, scale) {
  tl.bands.forEach((band, i) => {
    const g = svg('g', { class: 'fault-band ' + band.class, 'data-band': i }, root);
    const x = band.start * scale;
    const width = Math.max(2, (bandEnd(band) - band.start) * scale);
    for (const lane of band.lanes) {
      svg('rect', { x, y: laneY(lane), width, height: LANE_H }, g);
    }
    // A fault over lanes apart (a partition between a client and a broker)
    // is joined by a line where it starts.
    if (band.lanes.length > 1) {
      const top = laneY(Math.min(...band.lanes));
      const bottom = laneY(Math.max(...band.lanes)) + LANE_H;
      svg('line', { x1: x, x2: x, y1: top, y2: bottom }, g);
    }
  });
}

function drawSpans(root, scale) {
  tl.connections.forEach((span, i) => {
    const y = laneY(span.lane) + LANE_H - 3;
    const end = span.end === null ? tl.end : span.end;
    // Coloured by the broker it went to (a node's lane number).
    const hue = (span.tag * 67) % 360;
    svg('line', {
      class: 'conn', 'data-conn': i, x1: span.start * scale, x2: Math.max(span.start * scale + 1, end * scale),
      y1: y, y2: y, stroke: 'hsl(' + hue + ',60%,45%)',
    }, root);
  });
  // A node may lead several groups at once: each group has its own strip
  // at the bottom of the lane.
  tl.leads.forEach((span, i) => {
    const end = span.end === null ? tl.end : span.end;
    const x = span.start * scale;
    const width = Math.max(1, (end - span.start) * scale);
    const y = laneY(span.lane) + LANE_H - 4 - ((span.tag - 1) % 4) * 4;
    const hue = (span.tag * 97 + 200) % 360;
    svg('rect', { class: 'lead', 'data-lead': i, x, y, width, height: 3, fill: 'hsl(' + hue + ',55%,40%)' }, root);
  });
}

// Marks of one lane and kind that fall in the same few pixels share a
// tick; the tick lists them.
function drawMarks(root, scale) {
  const buckets = new Map();
  for (const mark of tl.marks) {
    const column = Math.floor((mark.time * scale) / BUCKET_PX);
    const key = mark.lane + ':' + mark.kind + ':' + column;
    let bucket = buckets.get(key);
    if (!bucket) {
      bucket = { lane: mark.lane, kind: mark.kind, x: column * BUCKET_PX, events: [] };
      buckets.set(key, bucket);
    }
    bucket.events.push(mark.index);
  }
  state.buckets = Array.from(buckets.values());
  const g = svg('g', { class: 'marks' }, root);
  state.buckets.forEach((bucket, i) => {
    const rare = RARE.has(bucket.kind);
    const y = laneY(bucket.lane) + 2 + (ROW[bucket.kind] || 0) * 6;
    svg('rect', {
      class: 'm k-' + bucket.kind, 'data-b': i, x: bucket.x, y,
      width: rare ? 3 : 2, height: rare ? 14 : 5,
    }, g);
  });
}

function drawViolations(root, scale, height) {
  tl.violations.forEach((v, i) => {
    const selected = state.selected && state.selected.type === 'v' && state.selected.i === i;
    const g = svg('g', { class: 'violation' + (selected ? ' selected' : ''), 'data-v': i }, root);
    const x = v.time * scale;
    const y = laneY(v.lane);
    svg('line', { x1: x, x2: x, y1: AXIS_H, y2: height }, g);
    svg('path', { d: 'M' + (x - 6) + ',' + y + ' h12 l-6,10 z' }, g);
  });
}

function drawHighlights(root, scale) {
  if (!state.selected || state.selected.type !== 'v') return;
  for (const index of tl.violations[state.selected.i].related) {
    const mark = markByIndex.get(index);
    if (!mark) continue;
    svg('circle', { class: 'hl', cx: mark.time * scale, cy: laneY(mark.lane) + LANE_H / 2, r: 6 }, root);
  }
}

function render() {
  const root = document.getElementById('lanes');
  root.replaceChildren();
  const width = chartWidth();
  const height = laneY(tl.lanes.length);
  const scale = width / Math.max(1, tl.end);
  // Room on the right for a violation's marker at the very end (the
  // broker's end state is the last event).
  root.setAttribute('width', width + 14);
  root.setAttribute('height', height);
  drawLanes(root, width + 14);
  drawAxis(root, scale, height);
  drawHeal(root, scale, height);
  drawBands(root, scale);
  drawSpans(root, scale);
  drawMarks(root, scale);
  drawViolations(root, scale, height);
  drawHighlights(root, scale);
  document.getElementById('zoom-level').textContent = '×' + state.zoom;
}

function legend() {
  const box = document.getElementById('legend');
  const entry = (swatch, label) => {
    const span = document.createElement('span');
    const i = document.createElement('i');
    i.className = swatch;
    span.append(i, label);
    box.appendChild(span);
  };
  for (const kind of LEGEND) entry('sw-' + kind, kind);
  for (const kind of FAULT_CLASSES) entry('sw-' + kind, kind + ' fault');
}

// What the element under the pointer stands for: its heading and its
// events' history indices.
function describe(target) {
  const g = target.closest('[data-band],[data-v],[data-b],[data-conn],[data-lead]');
  if (!g) return null;
  if (g.dataset.band !== undefined) {
    const band = tl.bands[+g.dataset.band];
    const until = band.end === null ? 'never ended' : 'to ' + seconds(band.end);
    return { type: 'band', i: +g.dataset.band, title: band.class + ' fault: ' + band.label + ', ' + seconds(band.start) + ' ' + until, events: [band.index] };
  }
  if (g.dataset.v !== undefined) {
    const v = tl.violations[+g.dataset.v];
    return { type: 'v', i: +g.dataset.v, title: 'VIOLATION ' + v.rule + ' at ' + seconds(v.time) + ': ' + v.detail, events: v.related, at: v.index };
  }
  if (g.dataset.b !== undefined) {
    const bucket = state.buckets[+g.dataset.b];
    return { type: 'b', title: bucket.events.length + ' × ' + bucket.kind + ' on ' + tl.lanes[bucket.lane].name, events: bucket.events };
  }
  if (g.dataset.conn !== undefined) {
    const span = tl.connections[+g.dataset.conn];
    return { type: 'conn', title: 'connection of ' + tl.lanes[span.lane].name + ' to ' + tl.lanes[span.tag].name, events: span.ended_by === null ? [] : [span.ended_by] };
  }
  const span = tl.leads[+g.dataset.lead];
  return { type: 'lead', title: tl.lanes[span.lane].name + ' leads group ' + span.tag, events: span.ended_by === null ? [] : [span.ended_by] };
}

function showTip(event) {
  const tip = document.getElementById('tip');
  const what = describe(event.target);
  if (!what) {
    tip.hidden = true;
    return;
  }
  const lines = [what.title].concat(what.events.slice(0, 8).map((i) => texts[i]));
  if (what.events.length > 8) lines.push('… ' + (what.events.length - 8) + ' more (click)');
  tip.textContent = lines.join('\n');
  tip.hidden = false;
  tip.style.left = Math.min(event.clientX + 12, window.innerWidth - tip.offsetWidth - 4) + 'px';
  tip.style.top = (event.clientY + 14) + 'px';
}

function showDetail(what) {
  const detail = document.getElementById('detail');
  detail.replaceChildren();
  const heading = document.createElement('h2');
  heading.textContent = what.title;
  const list = document.createElement('ol');
  for (const index of what.events.slice(0, LIST_MAX)) {
    const item = document.createElement('li');
    item.textContent = '#' + index + ' ' + texts[index];
    if (index === what.at) item.className = 'at';
    list.appendChild(item);
  }
  detail.append(heading, list);
  if (what.events.length > LIST_MAX) {
    const more = document.createElement('p');
    more.textContent = (what.events.length - LIST_MAX) + ' more not listed';
    detail.appendChild(more);
  }
}

function select(event) {
  const what = describe(event.target);
  if (!what) return;
  state.selected = what;
  showDetail(what);
  render();
}

// Zooms by `factor`, keeping the time at the middle of the view in place.
function zoom(factor) {
  const scroller = document.getElementById('scroller');
  const middle = (scroller.scrollLeft + scroller.clientWidth / 2) / chartWidth();
  state.zoom = factor === 0 ? 1 : Math.min(512, Math.max(1, state.zoom * factor));
  render();
  scroller.scrollLeft = middle * chartWidth() - scroller.clientWidth / 2;
}

function main() {
  legend();
  drawLabels();
  render();
  const root = document.getElementById('lanes');
  root.addEventListener('mousemove', showTip);
  root.addEventListener('mouseleave', () => { document.getElementById('tip').hidden = true; });
  root.addEventListener('click', select);
  document.getElementById('zoom-in').addEventListener('click', () => zoom(2));
  document.getElementById('zoom-out').addEventListener('click', () => zoom(0.5));
  document.getElementById('zoom-fit').addEventListener('click', () => zoom(0));
  document.addEventListener('keydown', (event) => {
    const factor = { '+': 2, '=': 2, '-': 0.5, '0': 0 }[event.key];
    if (factor !== undefined) zoom(factor);
  });
  // What the browser test reads back: drawn, and how much of what.
  document.body.dataset.bands = document.querySelectorAll('.fault-band').length;
  document.body.dataset.violations = document.querySelectorAll('.violation').length;
  document.body.dataset.lanes = tl.lanes.length;
  document.body.dataset.ready = 'yes';
}

main();
