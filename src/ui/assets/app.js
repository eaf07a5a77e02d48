// taskqueue dashboard: live refresh of the overview's throughput chart.
// No framework; the pages work without this script (it only draws).
(function () {
  "use strict";
  var canvas = document.getElementById("throughput");
  if (!canvas) { return; }
  var source = canvas.getAttribute("data-source");
  var executedOut = document.getElementById("rate-executed");
  var failedOut = document.getElementById("rate-failed");

  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function draw(points) {
    var ratio = window.devicePixelRatio || 1;
    var width = canvas.clientWidth, height = canvas.clientHeight;
    canvas.width = width * ratio; canvas.height = height * ratio;
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    var pad = { left: 44, right: 10, top: 10, bottom: 22 };
    var span = 15 * 60 * 1000, end = Date.now(), start = end - span;
    var max = 1;
    points.forEach(function (p) { max = Math.max(max, p.executed_per_s, p.failed_per_s); });
    var x = function (t) { return pad.left + (t - start) / span * (width - pad.left - pad.right); };
    var y = function (v) { return height - pad.bottom - v / max * (height - pad.top - pad.bottom); };
    ctx.strokeStyle = css("--line"); ctx.fillStyle = css("--muted");
    ctx.font = "11px system-ui, sans-serif"; ctx.lineWidth = 1;
    for (var i = 0; i <= 4; i++) {
      var v = max * i / 4;
      ctx.beginPath(); ctx.moveTo(pad.left, y(v)); ctx.lineTo(width - pad.right, y(v)); ctx.stroke();
      ctx.fillText(v.toFixed(v < 10 ? 1 : 0), 4, y(v) + 4);
    }
    for (var m = 0; m <= 15; m += 5) {
      ctx.fillText(m === 15 ? "now" : "-" + (15 - m) + " min", x(start + m * 60000) - 12, height - 6);
    }
    function line(field, color) {
      ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
      points.forEach(function (p, index) {
        var px = x(Date.parse(p.at)), py = y(p[field]);
        if (index === 0) { ctx.moveTo(px, py); } else { ctx.lineTo(px, py); }
      });
      ctx.stroke();
    }
    line("executed_per_s", css("--accent"));
    line("failed_per_s", css("--bad"));
    var last = points[points.length - 1];
    if (last) {
      if (executedOut) { executedOut.textContent = last.executed_per_s.toFixed(2); }
      if (failedOut) { failedOut.textContent = last.failed_per_s.toFixed(2); }
    }
  }

  function refresh() {
    fetch(source, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) { return response.ok ? response.json() : { points: [] }; })
      .then(function (body) { draw(body.points || []); canvas.setAttribute("data-points", String((body.points || []).length)); })
      .catch(function () { /* keep the last drawing */ });
  }

  refresh();
  setInterval(refresh, 10000);
  window.addEventListener("resize", refresh);
})();
