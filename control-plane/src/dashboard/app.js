// Routemaster dashboard. Reads only the public status API (/v1/...), every REFRESH_MS.
//
// To add a panel, append to PANELS: { id, title, reads: [API paths], render(data, el) }.
// `data` maps each path read to its parsed JSON; `el` is the panel's <section>, emptied
// before each render. Build DOM with h() (text is always set as text, never as HTML).
'use strict';

const REFRESH_MS = 2000;

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function table(headers, rows) {
  return h('table', {},
    h('thead', {}, h('tr', {}, headers.map(([label, cls]) => h('th', { class: cls }, label)))),
    h('tbody', {}, rows));
}

function badge(state) {
  return h('span', { class: `badge state-${state}` }, state);
}

function duration(seconds) {
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h${Math.floor(seconds % 3600 / 60)}m`;
  return `${Math.floor(seconds / 86400)}d${Math.floor(seconds % 86400 / 3600)}h`;
}

// Request and error rates from the counters of two successive polls, per node.
const previous = new Map();
function rates(nodes, now) {
  const out = new Map();
  for (const n of nodes) {
    const p = previous.get(n.id);
    if (p && now > p.at && n.requests_total >= p.requests) {
      const secs = (now - p.at) / 1000;
      out.set(n.id, {
        rps: (n.requests_total - p.requests) / secs,
        eps: Math.max(0, n.errors_total - p.errors) / secs,
      });
    }
    previous.set(n.id, { at: now, requests: n.requests_total, errors: n.errors_total });
  }
  return out;
}

function rate(x) {
  if (x === undefined) return '…';
  return x >= 100 ? x.toFixed(0) : x.toFixed(1);
}

const PANELS = [
  {
    id: 'fleet',
    title: 'Fleet',
    reads: ['/v1/nodes'],
    render(data, el) {
      const { version, nodes } = data['/v1/nodes'];
      const r = rates(nodes, Date.now());
      const sorted = [...nodes].sort((a, b) => a.group.localeCompare(b.group) || a.id.localeCompare(b.id));
      el.append(h('h2', {}, `Fleet — ${nodes.length} node${nodes.length === 1 ? '' : 's'}, version ${version}`));
      if (!nodes.length) {
        el.append(h('p', { class: 'muted' }, 'No proxy has connected yet.'));
        return;
      }
      el.append(table(
        [['Node'], ['Group'], ['Labels'], ['State'], ['Version', 'num'], ['Healthy'],
         ['Req/s', 'num'], ['Err/s', 'num'], ['In flight', 'num'], ['Uptime', 'num'], ['Control plane']],
        sorted.map((n) => h('tr', { class: 'node-row', 'data-node': n.id },
          h('td', { class: 'mono' }, n.id),
          h('td', {}, n.group),
          h('td', {}, Object.entries(n.labels).map(([k, v]) => h('span', { class: 'label' }, `${k}=${v}`))),
          h('td', {}, badge(n.state), n.last_nack ? h('div', { class: 'muted' }, `NACK v${n.last_nack_version}: ${n.last_nack}`) : null),
          h('td', { class: 'num' }, n.applied_version),
          h('td', {}, n.healthy ? 'yes' : 'no'),
          h('td', { class: 'num' }, rate(r.get(n.id)?.rps)),
          h('td', { class: 'num' }, rate(r.get(n.id)?.eps)),
          h('td', { class: 'num' }, n.in_flight),
          h('td', { class: 'num' }, duration(n.uptime_seconds)),
          h('td', { class: 'mono muted' }, n.control_plane))),
      ));
    },
  },
  {
    id: 'map',
    title: 'Route map',
    reads: ['/v1/map'],
    render(data, el) {
      const map = data['/v1/map'];
      el.append(h('h2', {}, 'Route map — host → path → route → service → instances, and the proxies serving it'));
      const rows = [];
      let last = {};
      for (const host of map.hosts) {
        for (const path of host.paths) {
          for (const route of path.routes) {
            const targets = route.services.length ? route.services : [null];
            for (const svc of targets) {
              const same = last.host === host.host && last.path === path.path + path.kind;
              last = { host: host.host, path: path.path + path.kind };
              rows.push(h('tr', {
                class: `map-row${same ? ' repeat' : ''}`,
                'data-host': host.host, 'data-route': route.id, 'data-service': svc ? svc.name : '',
              },
              h('td', { class: 'host mono' }, host.host === '*' ? '* (any host)' : host.host),
              h('td', { class: 'path mono' }, path.path, ' ', h('span', { class: 'muted' }, path.kind)),
              h('td', { class: 'route' },
                h('span', { class: 'mono' }, route.id),
                route.methods.length ? h('div', { class: 'muted' }, route.methods.join(' ')) : null,
                route.conditions.map((c) => h('div', { class: 'muted' }, c)),
                route.priority ? h('div', { class: 'muted' }, `priority ${route.priority}`) : null),
              h('td', { class: 'service' }, svc
                ? [h('span', { class: 'mono' }, svc.name), ' ',
                  h('span', { class: 'muted' }, `${svc.share_percent}%${svc.protocol !== 'http1' ? ' ' + svc.protocol : ''}`)]
                : h('span', { class: 'muted' }, route.redirect ? `redirect → ${route.redirect}` : '—')),
              h('td', { class: 'instances' }, svc
                ? (svc.instances.length
                  ? h('ul', { class: 'plain mono' }, svc.instances.map((i) => h('li', { class: `instance-${i.source}` },
                    i.address,
                    i.weight !== 1 ? h('span', { class: 'muted' }, ` ×${i.weight}`) : null,
                    i.source === 'registered' ? h('span', { class: 'muted', title: `registered instance ${i.id}` }, ' registered') : null)))
                  : h('span', { class: 'muted' }, 'no instances'))
                : null),
              h('td', { class: 'proxies' },
                h('span', { class: 'muted' }, `group ${route.group}: `),
                route.proxies.length
                  ? route.proxies.map((p) => h('span', { class: 'label', title: `${p.state}, version ${p.applied_version}` }, p.id, ' ', badge(p.state)))
                  : h('span', { class: 'muted' }, 'no proxies'))));
            }
          }
        }
      }
      if (!rows.length) {
        el.append(h('p', { class: 'muted' }, 'No routes yet: routemaster apply -f routes.yaml'));
        return;
      }
      el.append(table([['Host'], ['Path'], ['Route'], ['Service'], ['Instances'], ['Served by']], rows));
    },
  },
  {
    id: 'shadow',
    title: 'Shadow routes',
    reads: ['/v1/shadow'],
    render(data, el) {
      const { routes } = data['/v1/shadow'];
      el.append(h('h2', {}, `Shadow routes — ${routes.length} (evaluated on live traffic, never serving)`));
      if (!routes.length) {
        el.append(h('p', { class: 'muted' }, 'No shadow routes: declare one with mode: shadow.'));
        return;
      }
      el.append(table(
        [['Route'], ['Would'], ['Requests', 'num'], ['Hit', 'num'], ['Miss', 'num'], ['Unknown', 'num'], ['Hit rate', 'num'], ['Last miss']],
        routes.map((r) => {
          const last = r.recent.length ? r.recent[r.recent.length - 1] : null;
          const pct = r.hit_rate === null ? '—' : `${(r.hit_rate * 100).toFixed(2)}%`;
          return h('tr', { class: 'shadow-row', 'data-route': r.route },
            h('td', { class: 'mono' }, r.route),
            h('td', { class: 'muted' }, r.outcome),
            h('td', { class: 'num' }, r.requests),
            h('td', { class: 'num' }, r.hit),
            h('td', { class: 'num' }, r.miss),
            h('td', { class: 'num' }, r.unknown),
            h('td', { class: 'num' }, h('span', { class: `badge ${r.miss ? 'bad' : r.hit ? 'ok' : ''}` }, pct)),
            h('td', { class: 'mono' }, last
              ? [`${last.method} ${last.path}`, h('div', { class: 'muted' }, `expected ${last.expected}`), h('div', { class: 'muted' }, `actual ${last.actual}`)]
              : h('span', { class: 'muted' }, '—')));
        }),
      ));
    },
  },
  {
    id: 'services',
    title: 'Services',
    reads: ['/v1/services'],
    render(data, el) {
      const services = data['/v1/services'];
      el.append(h('h2', {}, `Services — ${services.length}`));
      // `health` (when the control plane has it): every endpoint as the proxies serving
      // the service report it, registered ones included.
      const instances = (s) => {
        const reported = new Map(((s.health && s.health.instances) || []).map((i) => [i.address, i]));
        const rows = (s.instances || []).map((i) => ({ address: i.address, weight: i.weight, health: reported.get(i.address) }));
        for (const [address, health] of reported) {
          if (!rows.some((r) => r.address === address)) rows.push({ address, health, discovered: true });
        }
        return rows;
      };
      const healthBadge = (hl) => {
        if (!hl) return h('span', { class: 'muted', title: 'no proxy reports this instance' }, 'not reported');
        const by = hl.seen_by.map((x) => `${x.node}: ${x.healthy ? 'healthy' : 'unhealthy'}${x.ejected ? ' (ejected)' : ''}`).join(', ');
        return h('span', { class: `badge ${hl.healthy ? 'ok' : 'bad'}`, title: by }, hl.healthy ? 'healthy' : 'unhealthy');
      };
      el.append(table([['Service'], ['Protocol'], ['Balancing'], ['Instances'], ['Health']],
        services.map((s) => {
          const rows = instances(s);
          const panic = (s.health && s.health.panic) || [];
          return h('tr', { class: 'service-row', 'data-service': s.name },
            h('td', { class: 'mono' }, s.name),
            h('td', {}, s.protocol || 'http1'),
            h('td', {}, s.load_balancing || ''),
            h('td', {}, h('ul', { class: 'plain mono' }, rows.map((r) => h('li', {}, r.address,
              r.weight && r.weight !== 1 ? h('span', { class: 'muted' }, ` ×${r.weight}`) : null,
              r.discovered ? h('span', { class: 'muted' }, ' registered') : null)))),
            h('td', {}, h('ul', { class: 'plain' }, rows.map((r) => h('li', {}, healthBadge(r.health)))),
              panic.length ? h('div', {}, h('span', { class: 'badge bad', title: 'every instance looked down: balancing over all of them' }, `panic on ${panic.join(', ')}`)) : null));
        })));
    },
  },
  {
    id: 'changes',
    title: 'Recent changes',
    reads: ['/v1/changes'],
    render(data, el) {
      const { changes } = data['/v1/changes'];
      el.append(h('h2', {}, 'Recent changes (seen by this replica)'));
      el.append(table([['Version', 'num'], ['Published'], ['What changed'], ['Routes', 'num'], ['Services', 'num']],
        changes.map((c) => h('tr', { class: 'change-row', 'data-version': c.version },
          h('td', { class: 'num' }, c.version),
          h('td', { class: 'mono muted' }, c.published_at),
          h('td', {}, c.reload ? h('span', { class: 'muted' }, 'loaded in full') : [
            c.changes.map((x) => h('div', {}, `${x.kind} `, h('span', { class: 'mono' }, x.name), ` ${x.change}`)),
            c.more ? h('div', { class: 'muted' }, `… and ${c.more} more`) : null]),
          h('td', { class: 'num' }, c.routes),
          h('td', { class: 'num' }, c.services)))));
    },
  },
];

function renderSummary(status) {
  const n = status.nodes;
  const converged = n.total > 0 && n.converged === n.total;
  const el = document.getElementById('summary');
  el.replaceChildren(h('span', {},
    h('span', { id: 'version' }, `version ${status.version}`), ' · ',
    `${status.routes} routes, ${status.services} services`, ' · etcd ',
    h('span', { class: `badge ${status.etcd.connected ? 'ok' : 'bad'}` }, status.etcd.connected ? 'connected' : 'unreachable'),
    ' · fleet ',
    h('span', { class: `badge ${converged ? 'ok' : n.total ? 'warn' : ''}` }, `${n.converged}/${n.total} converged`),
    n.lost ? [' ', h('span', { class: 'badge bad' }, `${n.lost} lost`)] : null));
}

async function fetchJson(path) {
  const r = await fetch(path, { headers: { accept: 'application/json' } });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

const sections = new Map();
function section(panel) {
  let el = sections.get(panel.id);
  if (!el) {
    el = h('section', { id: `panel-${panel.id}` });
    document.getElementById('panels').append(el);
    sections.set(panel.id, el);
  }
  return el;
}

async function refresh() {
  const paths = ['/v1/status', ...new Set(PANELS.flatMap((p) => p.reads))];
  const banner = document.getElementById('error');
  try {
    const results = await Promise.all(paths.map(fetchJson));
    const data = Object.fromEntries(paths.map((p, i) => [p, results[i]]));
    renderSummary(data['/v1/status']);
    for (const panel of PANELS) {
      const el = section(panel);
      el.replaceChildren();
      try {
        panel.render(data, el);
      } catch (e) {
        el.replaceChildren(h('h2', {}, panel.title), h('p', { class: 'error' }, String(e)));
      }
    }
    banner.hidden = true;
    document.getElementById('refreshed').textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    // Keep the last good view; say why it is not moving.
    banner.textContent = `cannot reach the control plane: ${e.message}`;
    banner.hidden = false;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
