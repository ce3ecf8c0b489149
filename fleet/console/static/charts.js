/* Small SVG charts for the fleet console (no library, no network).
 * EdgeCharts.line(series, opts) -> <svg>: time series with gaps for nulls.
 * EdgeCharts.hbars(rows, parts, opts) -> <svg>: horizontal stacked bars.
 * EdgeCharts.hist(reference, live, opts) -> <svg>: two histograms over the same bins, as shares.
 * Every label is set with textContent, never parsed as markup.
 */
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";

  function el(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const a = Math.abs(v);
    if (Number.isInteger(v) && a < 1e6) return v.toLocaleString("en-US");
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
    if (a >= 100) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1);
    return v.toFixed(2).replace(/\.?0+$/, "") || "0";
  }

  function clock(ts) {
    const d = new Date(ts * 1000);
    return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
  }

  /** series: [{name, color, x: [unix s], y: [number|null]}]; opts: {unit, height, empty}. */
  function line(series, opts) {
    opts = opts || {};
    const W = 560, H = opts.height || 200, L = 46, R = 12, T = 12, B = 26;
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
      "aria-label": opts.label || "chart" });
    const xs = series.flatMap((s) => s.x);
    const ys = series.flatMap((s) => s.y.filter((v) => v !== null && Number.isFinite(v)));
    if (!xs.length || !ys.length) {
      svg.appendChild(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle" },
        opts.empty || "no data in this period"));
      return svg;
    }
    const x0 = Math.min(...xs), x1 = Math.max(...xs) || x0 + 1;
    const ymax = niceMax(Math.max(...ys) * 1.05);
    const sx = (x) => L + (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)) * (W - L - R);
    const sy = (y) => T + (1 - y / ymax) * (H - T - B);
    const grid = el("g", { class: "grid" });
    for (let i = 0; i <= 4; i++) {
      const v = (ymax * i) / 4, y = sy(v);
      grid.appendChild(el("line", { x1: L, x2: W - R, y1: y, y2: y }));
      grid.appendChild(el("text", { x: L - 6, y: y + 4, "text-anchor": "end" },
        fmt(v) + (i === 4 && opts.unit ? " " + opts.unit : "")));
    }
    for (let i = 0; i <= 4; i++) {
      const x = x0 + ((x1 - x0) * i) / 4;
      grid.appendChild(el("text", { x: sx(x), y: H - 8, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, clock(x)));
    }
    svg.appendChild(grid);
    svg.appendChild(el("line", { class: "axis", x1: L, x2: W - R, y1: sy(0), y2: sy(0) }));
    for (const s of series) {
      let d = "", pen = false;
      s.x.forEach((x, i) => {
        const v = s.y[i];
        if (v === null || v === undefined || !Number.isFinite(v)) { pen = false; return; }
        d += (pen ? "L" : "M") + sx(x).toFixed(1) + "," + sy(v).toFixed(1);
        pen = true;
      });
      if (d) svg.appendChild(el("path", { d, fill: "none", stroke: s.color, "stroke-width": 2,
        "stroke-linejoin": "round", "data-series": s.name }));
      if (s.x.length === 1 && Number.isFinite(s.y[0]))
        svg.appendChild(el("circle", { cx: sx(s.x[0]), cy: sy(s.y[0]), r: 3, fill: s.color }));
    }
    if (opts.threshold !== undefined && opts.threshold <= ymax) {
      const y = sy(opts.threshold);
      svg.appendChild(el("line", { x1: L, x2: W - R, y1: y, y2: y, stroke: "#d64045",
        "stroke-dasharray": "4 4" }));
    }
    return svg;
  }

  /** rows: [{name, values: {key: n}}]; parts: [{key, label, color}]. */
  function hbars(rows, parts, opts) {
    opts = opts || {};
    const W = 560, rowH = 24, T = 4, L = 118, R = 56;
    const H = Math.max(rows.length, 1) * rowH + T * 2;
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
      "aria-label": opts.label || "bar chart" });
    if (!rows.length) {
      svg.appendChild(el("text", { x: W / 2, y: H / 2 + 4, "text-anchor": "middle" }, "no data"));
      return svg;
    }
    const totals = rows.map((r) => parts.reduce((a, p) => a + (r.values[p.key] || 0), 0));
    const max = Math.max(...totals, 1);
    rows.forEach((r, i) => {
      const y = T + i * rowH;
      const label = r.name.length > 16 ? r.name.slice(0, 15) + "…" : r.name;
      svg.appendChild(el("text", { x: L - 8, y: y + rowH / 2 + 4, "text-anchor": "end",
        fill: "#1c2430" }, label || "(none)"));
      let x = L;
      for (const p of parts) {
        const v = r.values[p.key] || 0;
        const w = (v / max) * (W - L - R);
        if (w > 0) {
          const rect = el("rect", { x, y: y + 4, width: Math.max(w, 1), height: rowH - 8,
            fill: p.color, rx: 2, "data-part": p.key, "data-row": r.name });
          rect.appendChild(el("title", {}, `${r.name}: ${v} ${p.label}`));
          svg.appendChild(rect);
        }
        x += w;
      }
      svg.appendChild(el("text", { x: x + 6, y: y + rowH / 2 + 4 }, fmt(totals[i])));
    });
    return svg;
  }

  /** reference, live: counts per bin (live may be null); opts: {edges, label, liveColor}.
   * Bars are shares of each histogram's total, so a cohort's live window and a reference of
   * another size compare directly. */
  function hist(reference, live, opts) {
    opts = opts || {};
    const W = 280, H = 120, L = 36, R = 6, T = 8, B = 20;
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart hist", role: "img",
      "aria-label": opts.label || "histogram" });
    const share = (c) => { const t = (c || []).reduce((a, b) => a + b, 0); return (c || []).map((v) => (t ? v / t : 0)); };
    const ref = share(reference), cur = live ? share(live) : null;
    const n = ref.length;
    const ymax = niceMax(Math.max(...ref, ...(cur || [0])) * 1.05);
    const bw = (W - L - R) / Math.max(n, 1);
    const sy = (y) => T + (1 - y / ymax) * (H - T - B);
    const grid = el("g", { class: "grid" });
    for (let i = 0; i <= 2; i++) {
      const v = (ymax * i) / 2, y = sy(v);
      grid.appendChild(el("line", { x1: L, x2: W - R, y1: y, y2: y }));
      grid.appendChild(el("text", { x: L - 4, y: y + 4, "text-anchor": "end" }, Math.round(v * 100) + "%"));
    }
    svg.appendChild(grid);
    const bar = (i, v, part, color, off) => {
      const y = sy(v), r = el("rect", { x: L + i * bw + off, y, width: Math.max(bw / 2 - 1, 1),
        height: Math.max(sy(0) - y, 0), fill: color, "data-part": part, "data-bin": i });
      r.appendChild(el("title", {}, `bin ${i + 1}: ${part} ${(v * 100).toFixed(1)}%`));
      svg.appendChild(r);
    };
    ref.forEach((v, i) => bar(i, v, "reference", "#b4bccb", 0));
    if (cur) cur.forEach((v, i) => bar(i, v, "live", opts.liveColor || "#2f6fed", bw / 2));
    else svg.appendChild(el("text", { x: (L + W) / 2, y: H / 2, "text-anchor": "middle" }, "no live counts"));
    const edges = opts.edges || [];
    if (edges.length) {
      svg.appendChild(el("text", { x: L + bw, y: H - 6, "text-anchor": "middle" }, fmt(edges[0])));
      svg.appendChild(el("text", { x: W - R - bw, y: H - 6, "text-anchor": "middle" }, fmt(edges[edges.length - 1])));
    } else {
      svg.appendChild(el("text", { x: L, y: H - 6 }, "categories 1–" + n));
    }
    return svg;
  }

  window.EdgeCharts = { line, hbars, hist, fmt };
})();
