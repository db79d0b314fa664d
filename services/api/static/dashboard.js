// Live progress dashboard: reads /v1/progress and /v1/progress/hourly with a viewer token and
// refreshes the communes named by each `counts` event of /v1/feed. Every text from data goes
// into the DOM as text (textContent / text nodes), never as markup.
"use strict";

(() => {
  window.__loadedAt = window.__loadedAt || Date.now(); // set once per document: a reload resets it

  const TOKEN_KEY = "eid.dashboard.token";
  const PROVINCE_KEY = "eid.dashboard.province";
  const HOUR = 3600e3;
  const HOURS = 24;
  const DEBOUNCE_MS = 300;
  const RECONNECT_MS = 5000;
  const CONCURRENCY = 4; // the feed holds one of the browser's six connections to this host
  const RECEIVED = "registration_received";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const TZ = "Asia/Ho_Chi_Minh";

  const number = new Intl.NumberFormat("vi-VN");
  const percentFormat = new Intl.NumberFormat("vi-VN", { maximumFractionDigits: 1 });
  const clock = new Intl.DateTimeFormat("vi-VN", {
    timeZone: TZ, hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
    day: "2-digit", month: "2-digit", year: "numeric",
  });
  const VN_OFFSET = 7 * HOUR; // Vietnam keeps UTC+7 all year
  const hourOf = (t) => String(new Date(t + VN_OFFSET).getUTCHours()).padStart(2, "0") + "h";

  const state = {
    token: "",
    province: "56",
    feed: null,
    reconnect: 0,
    generation: 0,
    rows: new Map(), // commune code -> refs of its row
    hourly: new Map(), // commune code -> 24 counts
    summary: null,
    pending: new Set(),
    pendingAll: false,
    timer: 0,
    running: false,
    rerun: false,
    hour: 0,
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else if (key === "data") Object.assign(node.dataset, value);
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // ---- settings: token and province from the URL fragment, the form or localStorage ----

  function fromFragment() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    const token = params.get("token");
    const province = params.get("province");
    if (!token && !province) return false;
    if (token) localStorage.setItem(TOKEN_KEY, token);
    if (province && /^[0-9]{2}$/.test(province)) localStorage.setItem(PROVINCE_KEY, province);
    history.replaceState(null, "", location.pathname + location.search); // no token on screen
    return true;
  }

  function loadSettings() {
    state.token = localStorage.getItem(TOKEN_KEY) || "";
    state.province = localStorage.getItem(PROVINCE_KEY) || "56";
    $("token").value = state.token;
    $("province").value = state.province;
  }

  function showSettings(show) {
    $("settings").hidden = !show;
    if (show) $(state.token ? "province" : "token").focus();
  }

  function showMessage(text) {
    $("message").textContent = text;
    $("message").hidden = !text;
  }

  // ---- reading the API ----

  class ApiFailure extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, params) {
    const url = path + "?" + new URLSearchParams(params).toString();
    let response;
    try {
      response = await fetch(url, {
        headers: { Authorization: "Bearer " + state.token }, cache: "no-store",
      });
    } catch (err) {
      throw new ApiFailure(0, "Mất kết nối máy chủ / Server unreachable");
    }
    if (!response.ok) {
      let message = response.statusText;
      try {
        message = (await response.json()).error.message || message;
      } catch (err) { /* not our JSON error body */ }
      throw new ApiFailure(response.status, message);
    }
    return response.json();
  }

  async function mapLimit(items, limit, fn) {
    const out = new Array(items.length);
    let next = 0;
    const worker = async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]);
      }
    };
    await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
    return out;
  }

  function hourWindow() {
    const until = Math.floor(Date.now() / HOUR) * HOUR + HOUR; // end of the current hour
    return { start: until - HOURS * HOUR, since: new Date(until - HOURS * HOUR).toISOString(),
             until: new Date(until).toISOString() };
  }

  async function received24(where, win) {
    const body = await api("/v1/progress/hourly", { ...where, since: win.since, until: win.until });
    const counts = new Array(HOURS).fill(0);
    for (const h of body.hours || []) {
      const i = Math.round((Date.parse(h.hour) - win.start) / HOUR);
      if (i >= 0 && i < HOURS) counts[i] = (h.counts && h.counts[RECEIVED]) || 0;
    }
    return counts;
  }

  async function refresh(all, communes) {
    const generation = state.generation;
    const province = state.province;
    const win = hourWindow();
    const progress = await api("/v1/progress", { level: "province", code: province });
    const codes = progress.communes.map((c) => c.commune_code);
    const wanted = codes.filter((c) => all || communes.has(c) || !state.hourly.has(c));
    const [summary, perCommune] = await Promise.all([
      received24({ level: "province", code: province }, win),
      mapLimit(wanted, CONCURRENCY, (c) => received24({ level: "commune", code: c }, win)),
    ]);
    if (generation !== state.generation) return; // the province or token changed meanwhile
    wanted.forEach((c, i) => state.hourly.set(c, perCommune[i]));
    state.hour = win.start;
    render(progress, summary, win.start);
  }

  // ---- refresh scheduling: debounced, one at a time ----

  function schedule(communes) {
    if (communes === null) state.pendingAll = true;
    else communes.forEach((c) => state.pending.add(c));
    clearTimeout(state.timer);
    state.timer = setTimeout(flush, DEBOUNCE_MS);
  }

  async function flush() {
    if (state.running) {
      state.rerun = true;
      return;
    }
    const all = state.pendingAll;
    const communes = new Set(state.pending);
    state.pendingAll = false;
    state.pending.clear();
    state.running = true;
    try {
      await refresh(all, communes);
      showMessage("");
    } catch (err) {
      failed(err);
    } finally {
      state.running = false;
      if (state.rerun) {
        state.rerun = false;
        flush();
      }
    }
  }

  function failed(err) {
    const status = err instanceof ApiFailure ? err.status : 0;
    if (status === 401 || status === 403) {
      stop();
      showMessage("Mã truy cập không hợp lệ / Invalid token: " + err.message);
      showSettings(true);
    } else if (status === 404 || status === 422) {
      stop();
      showMessage("Không có tỉnh này / Unknown province " + state.province);
      showSettings(true);
    } else {
      state.pendingAll = true; // reload everything once the server answers again
      showMessage("Không tải được dữ liệu / Could not load data: " + (err.message || err));
    }
  }

  // ---- live feed ----

  function setLive(status) {
    const live = $("live");
    live.dataset.live = status;
    live.textContent = {
      connected: "Trực tiếp / Live",
      connecting: "Đang kết nối / Connecting",
      disconnected: "Mất kết nối / Disconnected",
    }[status];
  }

  function connect() {
    closeFeed();
    setLive("connecting");
    const feed = new EventSource("/v1/feed?token=" + encodeURIComponent(state.token));
    state.feed = feed;
    feed.addEventListener("hello", () => {
      setLive("connected");
      schedule(null); // (re)connected: anything may have been missed
    });
    feed.addEventListener("counts", (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      const mine = (data.counts || []).filter((c) => c.province_code === state.province);
      if (mine.length) schedule(mine.map((c) => c.commune_code));
    });
    feed.addEventListener("error", () => {
      if (feed !== state.feed) return;
      if (feed.readyState === EventSource.CLOSED) {
        setLive("disconnected");
        state.reconnect = setTimeout(connect, RECONNECT_MS);
      } else {
        setLive("connecting"); // the browser retries by itself
      }
    });
  }

  function closeFeed() {
    clearTimeout(state.reconnect);
    if (state.feed) state.feed.close();
    state.feed = null;
  }

  function stop() {
    state.generation += 1;
    closeFeed();
    clearTimeout(state.timer);
    setLive("disconnected");
  }

  function start() {
    stop();
    state.rows.forEach((row) => row.root.remove());
    state.rows.clear();
    state.hourly.clear();
    $("province-name").textContent = "Tỉnh / Province " + state.province;
    showSettings(false);
    showMessage("");
    connect();
    schedule(null);
  }

  // ---- rendering ----

  function metricRefs(root) {
    return {
      root,
      count: root.querySelector(".count"),
      of: root.querySelector(".of"),
      fill: root.querySelector(".fill"),
      percent: root.querySelector(".percent"),
      deadline: root.querySelector(".deadline"),
    };
  }

  function metricCell(cls) {
    return el("div", { class: "metric-cell " + cls },
      el("div", { class: "num" }, el("span", { class: "count" }), el("span", { class: "of" })),
      el("div", { class: "bar" }, el("div", { class: "fill" })),
      el("p", { class: "sub" }, el("span", { class: "percent" }), " ", el("span", { class: "deadline" })));
  }

  function level(percent) {
    if (percent === null || percent === undefined) return "none";
    return percent >= 100 ? "good" : percent >= 50 ? "mid" : "low";
  }

  function dayMonthYear(iso) {
    const [y, m, d] = String(iso).split("-");
    return `${d}/${m}/${y}`;
  }

  function flash(node) {
    node.classList.remove("changed");
    void node.offsetWidth; // restart the animation
    node.classList.add("changed");
  }

  function updateMetric(refs, m) {
    const before = refs.count.textContent;
    refs.count.textContent = number.format(m.count);
    refs.of.textContent = m.target === null ? "" : " / " + number.format(m.target);
    refs.percent.textContent = m.percent === null
      ? "Chưa có chỉ tiêu / No target" : percentFormat.format(m.percent) + "%";
    refs.deadline.textContent = m.deadline ? "· Hạn / Due " + dayMonthYear(m.deadline) : "";
    refs.fill.style.width = Math.min(100, m.percent || 0) + "%";
    refs.root.dataset.level = level(m.percent);
    if (before && before !== "—" && before !== refs.count.textContent) flash(refs.root);
  }

  function chart(container, counts, start, wide) {
    const width = wide ? 480 : 240;
    const plot = wide ? 70 : 40;
    const height = plot + 14;
    const step = width / HOURS;
    const max = Math.max(1, ...counts);
    const total = counts.reduce((a, b) => a + b, 0);
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-label": `Tiếp nhận 24 giờ qua / Received in the last 24 h: ${total}` });
    root.append(svg("line", { class: "base", x1: 0, x2: width, y1: plot + 0.5, y2: plot + 0.5 }));
    counts.forEach((n, i) => {
      const h = n ? Math.max(2, (n / max) * (plot - 12)) : 0;
      const from = hourOf(start + i * HOUR);
      const bar = svg("rect", { class: i === HOURS - 1 ? "b now" : "b", x: i * step + 1,
        y: plot - h, width: step - 2, height: h, rx: 1 });
      bar.append(svg("title", {}, `${from}–${hourOf(start + (i + 1) * HOUR)}: ${number.format(n)}`));
      root.append(bar);
      if (i % 6 === 0 && (wide || i < 18)) { // keep clear of the "now" label
        root.append(svg("text", { class: "axis", x: i * step + 1, y: height - 2 }, from));
      }
    });
    root.append(svg("text", { class: "axis", x: width - 2, y: height - 2, "text-anchor": "end" },
      wide ? "bây giờ / now" : "now"));
    root.append(svg("text", { class: "axis", x: 1, y: 9 },
      `Σ ${number.format(total)} · tối đa / max ${number.format(Math.max(0, ...counts))}/h`));
    container.replaceChildren(root);
    container.dataset.total = String(total);
  }

  function makeRow(code) {
    const name = el("div", { class: "name" }, el("span", { class: "label" }), el("span", { class: "code" }, code));
    const received = metricCell("received");
    const activated = metricCell("activated");
    const hourly = el("div", { class: "chart" });
    const root = el("div", { class: "row", role: "row", data: { commune: code } },
      name, received, activated, hourly);
    return { root, label: name.querySelector(".label"), received: metricRefs(received),
             activated: metricRefs(activated), hourly };
  }

  function render(progress, summary, start) {
    $("province-name").textContent = progress.name;
    document.title = `${progress.name} · Tiến độ định danh mức 2 / Level-2 e-ID progress`;
    updateMetric(metricRefs($("sum-received")), progress.received);
    updateMetric(metricRefs($("sum-activated")), progress.activated);
    chart($("sum-hourly"), summary, start, true);

    const seen = new Set();
    for (const c of progress.communes) {
      seen.add(c.commune_code);
      let row = state.rows.get(c.commune_code);
      if (!row) {
        row = makeRow(c.commune_code);
        state.rows.set(c.commune_code, row);
      }
      row.label.textContent = c.name;
      updateMetric(row.received, c.received);
      updateMetric(row.activated, c.activated);
      Object.assign(row.root.dataset, {
        received: String(c.received.count), activated: String(c.activated.count),
        receivedTarget: String(c.received.target ?? ""), activatedTarget: String(c.activated.target ?? ""),
      });
      chart(row.hourly, state.hourly.get(c.commune_code) || new Array(HOURS).fill(0), start, false);
    }
    for (const [code, row] of state.rows) {
      if (!seen.has(code)) {
        row.root.remove();
        state.rows.delete(code);
      }
    }
    const ordered = [...state.rows.values()].sort((a, b) =>
      a.label.textContent.localeCompare(b.label.textContent, "vi"));
    $("rows").append(...ordered.map((r) => r.root)); // moves existing nodes into order
    $("empty").hidden = state.rows.size > 0;
    const now = new Date();
    $("updated").textContent = clock.format(now);
    document.body.dataset.updatedAt = now.toISOString();
  }

  // ---- wiring ----

  function init() {
    fromFragment();
    loadSettings();
    setLive("disconnected");
    $("settings").addEventListener("submit", (event) => {
      event.preventDefault();
      state.token = $("token").value.trim();
      state.province = $("province").value.trim();
      localStorage.setItem(TOKEN_KEY, state.token);
      localStorage.setItem(PROVINCE_KEY, state.province);
      start();
    });
    $("settings-toggle").addEventListener("click", () => showSettings($("settings").hidden));
    $("forget").addEventListener("click", () => {
      localStorage.removeItem(TOKEN_KEY);
      state.token = "";
      $("token").value = "";
      stop();
      showSettings(true);
    });
    window.addEventListener("hashchange", () => {
      if (fromFragment()) {
        loadSettings();
        start();
      }
    });
    setInterval(() => { // a new hour moves every chart's 24-hour window
      if (state.feed && Math.floor(Date.now() / HOUR) * HOUR + HOUR - HOURS * HOUR !== state.hour) {
        schedule(null);
      }
    }, 30e3);
    if (state.token) start();
    else showSettings(true);
  }

  init();
})();
