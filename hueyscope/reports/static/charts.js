/* hueyscope report: draws each page's charts with uPlot.
 *
 * uPlot 1.6.32 is vendored beside this file (uPlot.iife.min.js, MIT, see
 * VENDORED.md: `npm pack uplot@1.6.32`). Each <div class="chart"> holds its
 * spec as JSON, made by hueyscope/reports/charts.py: x positions, the x
 * range, where the ticks go and what they say, the label of each bucket
 * for hover, the series. Python decided all of that so a test can check it
 * against the data; this file only maps it onto uPlot options.
 *
 * Without JavaScript (or if uPlot fails to load) nothing happens here and
 * the table of numbers under each chart stays open.
 */
(function () {
  "use strict";
  if (typeof uPlot === "undefined") {
    return;
  }

  var HEIGHT = 240;
  var FONT = "12px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
  var drawn = [];

  function colour(name) {
    var value = getComputedStyle(document.documentElement)
      .getPropertyValue("--" + name).trim();
    return value || "#555555";
  }

  // Axis numbers: 950, 1.2k, 34k, 3.4M.
  function compact(v) {
    var a = Math.abs(v);
    if (a >= 1e6) { return (v / 1e6).toFixed(1).replace(/\.0$/, "") + "M"; }
    if (a >= 1e4) { return Math.round(v / 1e3) + "k"; }
    if (a >= 1e3) { return (v / 1e3).toFixed(1).replace(/\.0$/, "") + "k"; }
    return String(Math.round(v * 100) / 100);
  }

  // Hover values: the exact number, with thousands separators.
  function exact(v) {
    return v === null || v === undefined ? "–" : v.toLocaleString("en-US");
  }

  // Stacked bars are drawn as layers from zero: a layer's height is its own
  // value plus those of the series below it, and the top layer is drawn
  // first so the ones below paint over it. Hover shows each own value.
  function layer(spec, k) {
    return spec.x.map(function (_, i) {
      var sum = 0;
      for (var j = 0; j <= k; j++) { sum += spec.series[j].values[i] || 0; }
      return sum || null;
    });
  }

  // An empty bucket has no bar, not a hairline along the axis.
  function nonZero(values) {
    return values.map(function (v) { return v || null; });
  }

  function seriesOptions(spec) {
    var order = spec.series.map(function (_, k) { return k; });
    if (spec.stacked) { order.reverse(); }
    var data = [spec.x];
    var series = [{
      label: spec.head[0],
      value: function (u, v, si, i) {
        return i === null || i === undefined ? "–" : spec.labels[i];
      }
    }];
    order.forEach(function (k) {
      var s = spec.series[k];
      var c = colour(s.colour);
      if (spec.stacked) {
        data.push(layer(spec, k));
      } else {
        data.push(spec.kind === "bars" ? nonZero(s.values) : s.values);
      }
      var option = {
        label: s.name, stroke: c, width: 1, spanGaps: false,
        points: { show: false },
        value: function (u, v, si, i) {
          return i === null || i === undefined ? "–" : exact(s.values[i]);
        }
      };
      if (spec.kind === "bars") {
        option.fill = c;
        option.width = 0;
        option.paths = uPlot.paths.bars({ size: [0.9, Infinity], align: 0 });
      } else {
        option.width = s.dash ? 1 : 1.5;
        if (s.fill) { option.fill = c + "40"; }
        if (s.dash) { option.dash = [4, 3]; }
      }
      series.push(option);
    });
    return { series: series, data: data };
  }

  function options(spec, width, series) {
    var muted = colour("muted");
    var at = spec.ticks.map(function (t) { return t[0]; });
    var text = spec.ticks.map(function (t) { return t[1]; });
    return {
      width: width,
      height: HEIGHT,
      // Room on the right for the label of a tick at the very end.
      padding: [12, 36, 0, 0],
      series: series,
      scales: {
        x: { time: false, range: function () { return spec.range.slice(); } },
        y: { range: function () { return [0, spec.y_max]; } }
      },
      axes: [
        {
          label: spec.x_label, labelSize: 18, labelFont: FONT, font: FONT,
          size: 40, stroke: muted, grid: { show: false },
          ticks: { show: true, stroke: muted, width: 1, size: 4 },
          splits: function () { return at; },
          values: function () { return text; }
        },
        {
          label: spec.y_label, labelSize: 18, labelFont: FONT, font: FONT,
          size: 50, stroke: muted,
          grid: { stroke: colour("line"), width: 1 },
          ticks: { show: false },
          splits: function () { return spec.y_ticks; },
          values: function (u, splits) { return splits.map(compact); }
        }
      ],
      legend: { live: true },
      cursor: {
        y: false,
        points: { show: false },
        drag: { x: false, y: false, setScale: false }
      }
    };
  }

  function widthOf(element) {
    return Math.max(Math.floor(element.getBoundingClientRect().width), 280);
  }

  function draw(element) {
    var source = element.querySelector("script.chart-spec");
    if (!source) { return; }
    var spec = JSON.parse(source.textContent);
    var made = seriesOptions(spec);
    var chart = new uPlot(options(spec, widthOf(element), made.series),
                          made.data, element);
    element.uplot = chart;  // for the browser tests
    drawn.push(element);
    var details = element.parentNode.querySelector("details.chart-data");
    if (details) { details.open = false; }
    element.setAttribute("data-drawn", "");
  }

  // Follow the page width: a window resize, and the narrower page of print.
  function fit() {
    drawn.forEach(function (element) {
      element.uplot.setSize({ width: widthOf(element), height: HEIGHT });
    });
  }

  document.querySelectorAll("div.chart").forEach(draw);
  var pending = false;
  window.addEventListener("resize", function () {
    if (pending) { return; }
    pending = true;
    window.requestAnimationFrame(function () { pending = false; fit(); });
  });
  window.addEventListener("beforeprint", fit);
  window.addEventListener("afterprint", fit);
}());
