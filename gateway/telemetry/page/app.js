// bms-gateway's local page: read-only. Loads page.json once (and again after a reconnect), then follows the
// server-sent events at /events (at most one a second). No build step, no request off this origin.
"use strict";

const UNREACHABLE_AFTER_MS = 10000; // updates come every second while the gateway runs
const HOUR_S = 3600;
const LIMITS = [
  ["charge_voltage_limit_v", "CVL", 2, "V"],
  ["charge_current_limit_a", "CCL", 1, "A"],
  ["discharge_current_limit_a", "DCL", 1, "A"],
  ["discharge_voltage_limit_v", "DVL", 2, "V"],
  ["charge_enable", "charge", null, ""],
  ["discharge_enable", "discharge", null, ""],
  ["force_charge", "force charge", null, ""],
];
const CHARTS = [
  ["Voltage, V", [["pack_v", "pack", "#1f6feb"], ["cvl_v", "CVL", "#d29922"]]],
  ["Current, A (+ charging)", [["current_a", "current", "#1f6feb"], ["ccl_a", "CCL", "#2da44e"], ["dcl_a", "DCL", "#cf222e"]]],
  ["SOC, %", [["soc_pct", "SOC", "#8250df"]]],
  ["Cells, V", [["min_cell_v", "lowest", "#cf222e"], ["max_cell_v", "highest", "#2da44e"]]],
  ["Temperature, °C", [["temperature_c", "highest", "#bc4c00"]]],
];

const $ = (id) => document.getElementById(id);
let history = null;
let range = "1h";
let charts = [];
let lastUpdateMs = 0;
let reachable = false;
let staleText = null;
const events = new Map();

function fmt(value, digits) {
  return value === null || value === undefined || Number.isNaN(value) ? "–" : Number(value).toFixed(digits);
}

function set(id, value) {
  $(id).textContent = value;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// --- connection and staleness ------------------------------------------------------------------------------

function showState() {
  const conn = $("conn");
  const banner = $("banner");
  let state = "live";
  let message = null;
  if (!reachable) {
    state = lastUpdateMs ? "unreachable" : "connecting";
    const age = lastUpdateMs ? Math.round((Date.now() - lastUpdateMs) / 1000) : null;
    message = lastUpdateMs
      ? `Gateway unreachable: no update for ${age} s; reconnecting by itself. The values below are old.`
      : "Connecting to the gateway…";
  } else if (staleText) {
    state = "stale";
    message = staleText;
  }
  conn.dataset.state = state;
  conn.textContent = state === "connecting" ? "connecting…" : state;
  document.body.classList.toggle("stale", state !== "live");
  banner.hidden = message === null;
  banner.textContent = message || "";
  banner.dataset.state = state;
}

setInterval(() => {
  if (reachable && Date.now() - lastUpdateMs > UNREACHABLE_AFTER_MS) reachable = false;
  showState();
}, 1000);

function connect() {
  const source = new EventSource("events");
  let reopened = false;
  source.onmessage = (message) => {
    const doc = JSON.parse(message.data);
    lastUpdateMs = Date.now();
    reachable = true;
    render(doc);
    appendSample(doc.sample);
    if (reopened) {
      reopened = false;
      load(); // fill the gap in the history and events
    }
  };
  source.onerror = () => {
    reachable = false;
    reopened = true;
    showState(); // EventSource reconnects by itself after the server's retry: delay
  };
}

async function load() {
  try {
    const response = await fetch("page.json", { cache: "no-store" });
    if (!response.ok) return;
    const doc = await response.json();
    history = doc.history;
    events.clear();
    renderStatic(doc);
    render(doc);
    drawCharts();
  } catch (error) {
    reachable = false;
    showState();
  }
}

// --- the live part -------------------------------------------------------------------------------------------

function render(doc) {
  const status = doc.status;
  for (const event of doc.events || []) events.set(event.seq, event);
  renderEvents();
  set("frames", (doc.frames || []).join("\n") || "none sent yet");
  if (!status) {
    staleText = "No snapshot yet: the control loop has not run.";
    showState();
    return;
  }
  set("version", status.version);
  const pack = status.bms.pack;
  const link = status.bms.link;
  const age = status.bms.reading_age_s;
  staleText = null;
  if (status.failsafe !== "normal" || (link !== "ok" && link !== "failing")) {
    staleText = `BMS data stale: ${age === null ? "no reading yet" : `last reading ${fmt(age, 0)} s old`}` +
      ` (fail-safe ${status.failsafe}, BMS link ${link}${status.bms.last_error ? `: ${status.bms.last_error}` : ""}).`;
  }
  set("failsafe", status.failsafe);
  set("bms_link", link + (age === null ? "" : `, reading ${fmt(age, 1)} s old`));
  const inv = status.inverter;
  set("inverter", `${inv.link}; frames sent ${inv.frames_sent}` +
    (inv.send_failures ? `, send failures ${inv.send_failures}` : "") +
    (inv.last_send_error ? ` (${inv.last_send_error})` : ""));
  set("alarms", status.alarms.length ? status.alarms.join(", ") : "none");
  $("alarms").classList.toggle("bad", status.alarms.length > 0);
  const packs = status.packs;
  set("packs", `${packs.online.length} online` + (packs.offline.length ? `, offline: ${packs.offline.join(", ")}` : "") +
    (packs.latched.length ? `, latched: ${packs.latched.join(", ")}` : ""));
  if (pack) renderPack(pack.state, status, doc.lines);
  renderLimits(status.limits);
  renderEnergy(status.energy);
  showState();
}

function renderPack(state, status, lines) {
  set("soc", fmt(state.soc_pct, Number.isInteger(state.soc_pct) ? 0 : 1));
  set("pack_v", fmt(state.pack_voltage_v, 2));
  set("current_a", fmt(state.current_a, 1));
  set("power_w", fmt(state.power_w, 0));
  const dir = state.current_a > 0.05 ? "charging" : state.current_a < -0.05 ? "discharging" : "idle";
  set("direction", dir);
  $("direction").dataset.dir = dir;
  const temps = state.battery_temperatures_c.filter((t) => t !== null).map((t) => `${fmt(t, 1)} °C`);
  if (state.mos_temperature_c !== null) temps.push(`MOS ${fmt(state.mos_temperature_c, 1)} °C`);
  set("temperatures", temps.join(", ") || "–");
  set("balancer", state.balancer_on ? "balancing" + (state.balance_current_a ? ` ${fmt(state.balance_current_a, 2)} A` : "") : "off");
  const groups = $("cell_groups");
  groups.replaceChildren(cellGroup("battery", state, lines, "battery"));
  for (const each of status.packs.each) {
    const group = cellGroup(`${each.label} (${each.pack_id})`, each.state, lines, each.label);
    groups.append(group);
  }
  set("cells_note", `${state.cell_count} cells, Δ ${fmt(state.cell_delta_v * 1000, 0)} mV`);
}

function cellGroup(title, state, lines, key) {
  const group = el("div", "cellgroup");
  group.dataset.group = key;
  group.append(el("h3", "", `${title}: ${state.balancer_on ? "balancer on" : "balancer off"}`));
  const cells = state.cell_voltages_v;
  const marks = lines ? Object.values(lines) : [];
  const low = Math.min(...cells, ...marks) - 0.05;
  const high = Math.max(...cells, ...marks) + 0.05;
  const y = (v) => `${(((v - low) / (high - low)) * 100).toFixed(2)}%`;
  const plot = el("div", "cellplot");
  const hiIndex = cells.indexOf(Math.max(...cells));
  const loIndex = cells.indexOf(Math.min(...cells));
  cells.forEach((volts, i) => {
    const cell = el("div", "cell");
    cell.dataset.cell = String(i + 1);
    if (i === hiIndex) cell.classList.add("hi");
    if (i === loIndex) cell.classList.add("lo");
    const bar = el("div", "bar");
    bar.style.height = y(volts);
    cell.append(el("span", "v", fmt(volts, 3)), bar, el("span", "n", String(i + 1)));
    cell.title = `cell ${i + 1}: ${fmt(volts, 3)} V`;
    plot.append(cell);
  });
  if (lines) {
    for (const [name, cls] of [["ovp", "l-ovp"], ["charge_cutoff", "l-cut"], ["charge_knee", "l-knee"],
      ["discharge_knee", "l-knee"], ["discharge_cutoff", "l-cut"], ["uvp", "l-uvp"]]) {
      const line = el("div", `line ${cls}`);
      line.style.bottom = y(lines[name]);
      line.title = `${name.replace("_", " ")} ${fmt(lines[name], 3)} V`;
      plot.append(line);
    }
  }
  group.append(plot);
  return group;
}

function renderLimits(limits) {
  const rows = $("limits_rows");
  rows.replaceChildren();
  set("phase", limits && limits.charge_phase ? limits.charge_phase : "–");
  for (const [key, name, digits, unit] of LIMITS) {
    const row = el("tr");
    row.id = `lim_${key}`;
    let value = "–";
    if (limits) value = digits === null ? (limits[key] ? "yes" : "no") : `${fmt(limits[key], digits)}`;
    const reason = limits && limits.reasons[key];
    const valueCell = el("td", "val", value);
    if (unit && value !== "–") valueCell.append(el("span", "unit", ` ${unit}`));
    row.append(el("th", "", name), valueCell, el("td", "limiter", reason ? reason.limiter : ""),
      el("td", "reason", reason ? reason.reason : ""));
    if ((key === "charge_current_limit_a" || key === "discharge_current_limit_a") && limits && limits[key] === 0) {
      row.classList.add("bad");
    }
    rows.append(row);
  }
}

function renderEnergy(energy) {
  const box = $("energy");
  box.replaceChildren();
  if (!energy) {
    box.append(el("dd", "", "no meter"));
    return;
  }
  for (const [key, label, digits] of [["charged_kwh", "charged", 3], ["discharged_kwh", "discharged", 3]]) {
    box.append(el("dt", "", label), el("dd", "", `${fmt(energy[key], digits)} kWh (${fmt(energy[key.replace("kwh", "ah")], 1)} Ah)`));
  }
}

function renderEvents() {
  const list = $("events");
  const newest = [...events.values()].sort((a, b) => b.seq - a.seq).slice(0, 200);
  for (const seq of [...events.keys()]) if (!newest.some((e) => e.seq === seq)) events.delete(seq);
  list.replaceChildren(...newest.map((e) => {
    const item = el("li", `ev-${e.kind}`);
    item.append(el("time", "", new Date(e.wall_s * 1000).toLocaleTimeString()), el("span", "kind", e.kind), el("span", "", e.text));
    return item;
  }));
}

function renderStatic(doc) {
  set("config", JSON.stringify(doc.config, null, 2));
  set("profile", `profile ${doc.versions.profile}`);
  const versions = $("versions");
  versions.replaceChildren();
  for (const [name, value] of Object.entries(doc.versions)) versions.append(el("dt", "", name), el("dd", "", value));
  const pack = doc.status && doc.status.bms.pack;
  if (pack) {
    versions.append(el("dt", "", "BMS"), el("dd", "", `${pack.device.model || "?"}, firmware ${pack.device.software_version || "?"}`));
  }
  const audit = $("audit");
  audit.replaceChildren(...(doc.audit.length ? doc.audit.map((f) => {
    const item = el("li", `sev-${f.severity}`);
    item.append(el("b", "", `${f.severity}: ${f.rule}`), el("span", "", ` ${f.message} (BMS ${f.bms_value}, suggested ${f.suggested})`));
    return item;
  }) : [el("li", "", doc.status && doc.status.bms.pack ? "no findings" : "no BMS reading yet")]));
}

// --- charts (uPlot) ------------------------------------------------------------------------------------------

function chartData(names) {
  if (range === "1h") return [history.raw.t, ...names.map((n) => history.raw[n])];
  const pick = (n) => (n === "min_cell_v" ? "min" : n === "max_cell_v" ? "max" : "mean");
  return [history.minutes.t, ...names.map((n) => history.minutes[n][pick(n)])];
}

function drawCharts() {
  if (!history || typeof uPlot === "undefined") return;
  const box = $("charts");
  for (const chart of charts) chart.destroy();
  box.replaceChildren();
  const width = Math.max(240, box.clientWidth - 8);
  charts = CHARTS.map(([title, series]) => {
    const holder = el("div", "chart");
    box.append(holder);
    const options = {
      title, width, height: 150,
      series: [{}, ...series.map(([, label, stroke]) => ({ label, stroke, width: 1.5, spanGaps: false }))],
      axes: [{}, { size: 50 }],
      legend: { live: false },
      cursor: { drag: { x: false, y: false } },
    };
    return new uPlot(options, chartData(series.map(([name]) => name)), holder);
  });
}

function appendSample(sample) {
  if (!history || !sample) return;
  const raw = history.raw;
  if (raw.t.length && sample.t <= raw.t[raw.t.length - 1]) return;
  raw.t.push(sample.t);
  for (const name of history.series) raw[name].push(sample[name]);
  while (raw.t.length && raw.t[0] < sample.t - HOUR_S) {
    raw.t.shift();
    for (const name of history.series) raw[name].shift();
  }
  if (range === "1h") CHARTS.forEach(([, series], i) => charts[i] && charts[i].setData(chartData(series.map(([n]) => n))));
}

for (const [id, value] of [["range_1h", "1h"], ["range_24h", "24h"]]) {
  $(id).addEventListener("click", () => {
    range = value;
    $("range_1h").classList.toggle("on", value === "1h");
    $("range_24h").classList.toggle("on", value === "24h");
    drawCharts();
  });
}
let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(drawCharts, 200);
});

showState();
load().then(connect);
