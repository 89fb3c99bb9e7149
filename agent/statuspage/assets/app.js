'use strict';
// Courier status page: polls /api/status every 2 s and renders it. Everything is set
// with textContent: nothing from the server is ever parsed as HTML.

const $ = (id) => document.getElementById(id);

function bytes(n) {
  if (n == null) return '—';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + ' ' + u[i];
}

function ago(t) {
  if (!t) return '—';
  const s = Math.max(0, (Date.now() - new Date(t).getTime()) / 1000);
  if (s < 60) return Math.round(s) + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 86400) return (s / 3600).toFixed(1) + ' h ago';
  return (s / 86400).toFixed(1) + ' d ago';
}

function duration(s) {
  if (!s || !isFinite(s)) return '';
  if (s < 60) return Math.round(s) + ' s';
  if (s < 3600) return Math.round(s / 60) + ' min';
  return (s / 3600).toFixed(1) + ' h';
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}

function badge(e, state) {
  e.textContent = state;
  e.className = 'badge ' + state;
}

function renderCounts(counts) {
  const body = $('counts').tBodies[0];
  body.replaceChildren();
  const order = ['received', 'uploading', 'waiting', 'verified', 'published', 'done', 'quarantined'];
  for (const k of order) {
    if (!(k in (counts || {}))) continue;
    const tr = el('tr');
    tr.dataset.state = k;
    tr.append(el('td', null, k), el('td', 'num', String(counts[k])));
    body.append(tr);
  }
}

function renderUploads(ups) {
  const box = $('uploads');
  box.replaceChildren();
  $('no-uploads').hidden = ups.length > 0;
  for (const u of ups) {
    const d = el('div', 'upload');
    d.dataset.id = u.id;
    const pct = u.size > 0 ? Math.min(100, (100 * u.sent) / u.size) : 100;
    const line = `${u.id.slice(0, 8)} — ${bytes(u.sent)} of ${bytes(u.size)} (${pct.toFixed(0)}%)` +
      (u.rate ? ` at ${bytes(u.rate)}/s` : '') + (u.eta_seconds ? `, ${duration(u.eta_seconds)} left` : '');
    const bar = el('div', 'bar');
    const fill = el('div');
    fill.style.width = pct + '%';
    bar.append(fill);
    d.append(el('div', 'mono', line), bar);
    box.append(d);
  }
}

// chart draws one series as an area over the last hour.
function chart(svg, points, value, fmt) {
  svg.replaceChildren();
  const W = 360, H = 120, pad = 14;
  const ns = 'http://www.w3.org/2000/svg';
  const vals = points.map(value);
  const max = Math.max(1, ...vals);
  const now = Date.now();
  const x = (t) => pad + ((W - 2 * pad) * (3600e3 - (now - new Date(t).getTime()))) / 3600e3;
  const y = (v) => H - pad - ((H - 2 * pad) * v) / max;
  if (points.length > 0) {
    let d = `M ${x(points[0].at).toFixed(1)} ${H - pad}`;
    points.forEach((p, i) => { d += ` L ${x(p.at).toFixed(1)} ${y(vals[i]).toFixed(1)}`; });
    d += ` L ${x(points[points.length - 1].at).toFixed(1)} ${H - pad} Z`;
    const path = document.createElementNS(ns, 'path');
    path.setAttribute('d', d);
    path.setAttribute('class', 'area');
    svg.append(path);
  }
  const label = (txt, lx, ly) => {
    const t = document.createElementNS(ns, 'text');
    t.setAttribute('x', lx); t.setAttribute('y', ly); t.textContent = txt;
    svg.append(t);
  };
  label(fmt(max), 2, 10);
  label('−60 min', pad, H - 2);
  label('now', W - pad - 14, H - 2);
  svg.dataset.points = String(points.length);
  svg.dataset.max = String(max);
}

function renderErrors(errs) {
  const ul = $('errors');
  ul.replaceChildren();
  $('no-errors').hidden = errs.length > 0;
  for (const e of errs) {
    const li = el('li');
    li.append(el('span', 'mono', e.error + (e.count > 1 ? `  (×${e.count})` : '')), el('span', 'muted', '  ' + ago(e.at)));
    if (e.advice) li.append(el('div', 'advice', e.advice));
    ul.append(li);
  }
}

function renderQuarantined(qs) {
  const ul = $('quarantined');
  ul.replaceChildren();
  $('no-quarantined').hidden = qs.length > 0;
  for (const q of qs) {
    const li = el('li');
    li.dataset.id = q.id;
    li.append(el('span', 'mono', q.id), el('span', null, ' — ' + q.reason + ' '), el('span', 'muted', ago(q.at)));
    const cmd = el('div');
    cmd.append(el('span', 'muted', 'to send it again: '), el('code', null, q.retry));
    li.append(cmd);
    ul.append(li);
  }
}

function renderRecent(rs) {
  const body = $('recent').tBodies[0];
  body.replaceChildren();
  for (const r of rs) {
    const tr = el('tr');
    tr.append(el('td', 'mono', r.id), el('td', null, bytes(r.size)), el('td', 'mono', r.sha256.slice(0, 16) + '…'),
      el('td', null, r.source), el('td', null, ago(r.at)));
    body.append(tr);
  }
}

function render(v) {
  $('agent').textContent = v.agent;
  $('version').textContent = v.version || 'dev';
  $('started').textContent = v.started_at ? new Date(v.started_at).toLocaleString() : '—';
  $('updated').textContent = new Date(v.updated_at).toLocaleTimeString();
  const l = v.link || {};
  // An online agent whose uploads cannot go is degraded: say so at the top.
  badge($('state'), v.state === 'online' && l.state && l.state !== 'up' ? 'degraded' : v.state);
  badge($('link-state'), l.state || 'unknown');
  $('link-since').textContent = l.since ? 'since ' + new Date(l.since).toLocaleString() + ' (' + ago(l.since) + ')' : '';
  $('link-reason').textContent = l.reason || '';
  $('link-advice').textContent = l.advice || '';
  renderCounts(v.counts);
  const s = v.spool || {};
  $('spool-bytes').textContent = bytes(s.bytes);
  $('spool-limit').textContent = s.limit ? bytes(s.limit) : 'no limit';
  $('spool-bar').style.width = s.limit ? Math.min(100, (100 * s.bytes) / s.limit) + '%' : '0';
  $('free-disk').textContent = bytes(s.free_disk);
  $('mqtt').textContent = v.mqtt ? 'MQTT broker: ' + (v.mqtt.connected ? 'connected' : 'not connected' + (v.mqtt.last_error ? ' — ' + v.mqtt.last_error : '')) : '';
  renderUploads(v.uploads || []);
  const hist = v.history || [];
  chart($('chart-throughput'), hist, (p) => p.verified_bytes / 10, (m) => bytes(m) + '/s');
  chart($('chart-queue'), hist, (p) => p.queue, (m) => String(Math.round(m)));
  renderErrors(v.errors || []);
  renderQuarantined(v.quarantined || []);
  renderRecent(v.recent || []);
  const c = v.config || {};
  $('cfg-version').textContent = c.version ? String(c.version) : 'local file';
  $('cfg-source').textContent = c.source || 'local';
  $('cfg-sha').textContent = c.sha256 || '—';
  document.body.dataset.loaded = 'true';
}

async function poll() {
  try {
    const r = await fetch('api/status', { cache: 'no-store' });
    if (!r.ok) throw new Error('HTTP ' + r.status);
    render(await r.json());
  } catch (e) {
    badge($('state'), 'stopped');
    $('updated').textContent = 'agent not answering (' + e.message + ')';
  }
}

poll();
setInterval(poll, 2000);
