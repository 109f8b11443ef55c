// Honeycomb console: progressive enhancement only. Every page reads without
// this script; with it, times can be shown local or relative, ids copied,
// logs filtered instantly, and task and workflow pages update live over one
// EventSource per tab (closed while the tab is hidden, resumed from the
// last seq when it is shown again, with no line shown twice).
(function () {
  "use strict";

  // ---- times ------------------------------------------------------------
  var TIME_KEY = "hive.timefmt";
  var rtf = window.Intl && Intl.RelativeTimeFormat ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }) : null;

  function relative(ms) {
    var d = (ms - Date.now()) / 1000;
    var units = [["year", 31536000], ["month", 2592000], ["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(d) >= units[i][1] || units[i][0] === "second") {
        var v = Math.round(d / units[i][1]);
        return rtf ? rtf.format(v, units[i][0]) : v + " " + units[i][0] + "s";
      }
    }
    return "";
  }

  function showTime(el, mode) {
    var iso = el.getAttribute("datetime");
    if (!el.dataset.utc) el.dataset.utc = el.textContent;
    var ms = Date.parse(iso);
    if (isNaN(ms)) return;
    el.title = el.dataset.utc;
    if (mode === "local") el.textContent = new Date(ms).toLocaleString();
    else if (mode === "relative") el.textContent = relative(ms);
    else el.textContent = el.dataset.utc;
  }

  function timeMode() {
    try { return localStorage.getItem(TIME_KEY) || "utc"; } catch (e) { return "utc"; }
  }

  function applyTimes(root) {
    var mode = timeMode();
    (root || document).querySelectorAll("time[datetime]").forEach(function (el) { showTime(el, mode); });
  }

  function initTimes() {
    var box = document.getElementById("timefmt");
    var select = document.getElementById("timefmt-select");
    if (box && select) {
      box.hidden = false;
      select.value = timeMode();
      select.addEventListener("change", function () {
        try { localStorage.setItem(TIME_KEY, select.value); } catch (e) { /* private mode */ }
        applyTimes();
      });
    }
    applyTimes();
    setInterval(function () { if (timeMode() === "relative" && !document.hidden) applyTimes(); }, 10000);
  }

  // ---- copy buttons -----------------------------------------------------
  function initCopy(root) {
    (root || document).querySelectorAll("button[data-copy]").forEach(function (b) {
      if (b.dataset.bound) return;
      b.dataset.bound = "1";
      b.hidden = false;
      b.addEventListener("click", function () {
        var text = b.getAttribute("data-copy");
        var done = function () { b.textContent = "Copied"; setTimeout(function () { b.textContent = "Copy"; }, 1500); };
        if (navigator.clipboard && navigator.clipboard.writeText) navigator.clipboard.writeText(text).then(done, function () {});
      });
    });
  }

  // ---- one live stream per tab -------------------------------------------
  // Opens `url`, resuming after `after`; hands each new event (seq greater
  // than the last seen) to onEvent; stops for good after the server's `end`.
  function liveStream(url, after, onEvent, onEnd) {
    var last = after, es = null, ended = false, retry = null;
    function close() { if (es) { es.close(); es = null; } }
    function open() {
      if (ended || es || document.hidden) return;
      es = new EventSource(url + (url.indexOf("?") < 0 ? "?" : "&") + "last_event_id=" + last);
      es.onmessage = function (m) {
        var seq = Number(m.lastEventId);
        if (seq && seq <= last) return; // already shown
        if (seq) last = seq;
        var data;
        try { data = JSON.parse(m.data); } catch (e) { return; }
        onEvent(data, seq);
      };
      es.addEventListener("end", function () { ended = true; close(); if (onEnd) onEnd(); });
      es.addEventListener("problem", function () { close(); schedule(); });
      es.onerror = function () {
        // EventSource reconnects by itself (sending Last-Event-ID); when it
        // gave up, open a fresh one after a pause.
        if (es && es.readyState === EventSource.CLOSED) { es = null; schedule(); }
      };
    }
    function schedule() { if (!retry) retry = setTimeout(function () { retry = null; open(); }, 2000); }
    document.addEventListener("visibilitychange", function () { if (document.hidden) close(); else open(); });
    window.addEventListener("pagehide", close);
    open();
    return { close: close, last: function () { return last; } };
  }

  // ---- task page ----------------------------------------------------------
  var STATE_OF = { queued: "pending", scheduled: "scheduled", started: "running", attempt_failed: "pending",
    succeeded: "succeeded", failed: "failed", cancelled: "cancelled", timed_out: "timed_out" };
  var RANK = { debug: 0, info: 1, warn: 2, error: 3 };

  function levelOf(stream, line) {
    var head = line.slice(0, 40).toUpperCase();
    var words = [["ERROR", "error"], ["FATAL", "error"], ["WARN", "warn"], ["INFO", "info"], ["DEBUG", "debug"], ["TRACE", "debug"]];
    for (var i = 0; i < words.length; i++) if (head.indexOf(words[i][0]) >= 0) return words[i][1];
    return stream === "stderr" ? "warn" : "info";
  }

  function setBadge(el, state) {
    if (!el) return;
    el.className = "badge state-" + state;
    el.setAttribute("data-state", state);
    el.textContent = state.replace("_", " ");
  }

  function initTask() {
    var live = document.getElementById("live");
    var log = document.getElementById("log");
    if (!live || !log) return;
    var levelSel = document.getElementById("f-level");
    var text = document.getElementById("f-q");
    var attemptIn = document.getElementById("f-attempt");
    var follow = document.getElementById("follow");
    var pauseBtn = document.getElementById("pause");
    var pendingEl = document.getElementById("pending");
    var tail = live.dataset.tail === "true";
    var paused = false, buffer = [], attempt = 0, newElsewhere = 0;

    function matches(li) {
      var min = levelSel && levelSel.value ? RANK[levelSel.value] : 0;
      var q = text && text.value ? text.value.toLowerCase() : "";
      var a = attemptIn && attemptIn.value ? attemptIn.value : "";
      return RANK[li.dataset.level] >= min &&
        (!q || li.querySelector(".text").textContent.toLowerCase().indexOf(q) >= 0) &&
        (!a || li.dataset.attempt === a);
    }
    function refilter() { log.querySelectorAll("li").forEach(function (li) { li.hidden = !matches(li); }); }
    [levelSel, text, attemptIn].forEach(function (el) { if (el) el.addEventListener("input", refilter); });

    function selecting() {
      var s = document.getSelection();
      return s && !s.isCollapsed && log.contains(s.anchorNode);
    }
    function showPending() {
      if (!pendingEl) return;
      var n = buffer.length + newElsewhere;
      pendingEl.textContent = n ? n + " new line" + (n === 1 ? "" : "s") + (paused ? " (paused)" : selecting() ? " (selection kept)" : "") : "";
    }
    function flush() {
      if (paused || selecting() || !buffer.length) { showPending(); return; }
      var frag = document.createDocumentFragment();
      buffer.forEach(function (li) { li.hidden = !matches(li); li.dataset.received = String(Date.now()); frag.appendChild(li); });
      buffer = [];
      log.appendChild(frag);
      var empty = document.getElementById("log-empty");
      if (empty) empty.remove();
      if (follow && follow.checked) log.scrollTop = log.scrollHeight;
      showPending();
    }
    document.addEventListener("selectionchange", function () { if (!selecting()) flush(); });
    if (pauseBtn) pauseBtn.addEventListener("click", function () {
      paused = !paused;
      pauseBtn.setAttribute("aria-pressed", String(paused));
      pauseBtn.textContent = paused ? "Resume" : "Pause";
      flush();
    });

    function lineItem(d, seq) {
      var li = document.createElement("li");
      li.id = "L" + seq;
      li.dataset.seq = String(seq);
      li.dataset.level = levelOf(d.stream || "", d.line || "");
      li.dataset.attempt = String(attempt);
      li.dataset.stream = d.stream || "";
      var a = document.createElement("a");
      a.className = "ln"; a.href = "#L" + seq; a.textContent = String(seq);
      a.setAttribute("aria-label", "line " + seq);
      var lv = document.createElement("span"); lv.className = "lv"; lv.textContent = li.dataset.level;
      var t = document.createElement("span"); t.className = "text"; t.textContent = d.line || "";
      li.appendChild(a); li.appendChild(lv); li.appendChild(t);
      return li;
    }

    var refreshing = null;
    function refreshSummary() {
      if (refreshing) return;
      refreshing = fetch(live.dataset.summary, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          refreshing = null;
          var old = document.getElementById("summary");
          if (html && old) { old.outerHTML = html; var s = document.getElementById("summary"); applyTimes(s); initCopy(s); }
        }, function () { refreshing = null; });
    }

    if (live.dataset.terminal === "true") return;
    var controls = document.getElementById("log-controls");
    if (controls) controls.hidden = false;
    liveStream(live.dataset.stream, Number(live.dataset.after) || 0, function (d, seq) {
      if (d.type === "started") attempt = d.attempt || attempt;
      if (d.type === "log") {
        if (!tail) { newElsewhere++; showPending(); return; }
        buffer.push(lineItem(d, seq));
        flush();
        return;
      }
      var state = STATE_OF[d.type];
      if (!state) return;
      document.querySelectorAll(".lead > .badge").forEach(function (b) { setBadge(b, state); });
      var inSummary = document.querySelector("#task-state .badge");
      setBadge(inSummary, state);
      document.body.dataset.taskState = state;
      refreshSummary();
    }, function () { document.body.dataset.streamEnded = "true"; });
  }

  // ---- workflow page --------------------------------------------------------
  function initWorkflow() {
    var live = document.getElementById("wf-live");
    var graph = document.getElementById("graph");
    if (!live || !graph || live.dataset.terminal === "true") return;
    var timer = null;
    function redraw() {
      timer = null;
      fetch(live.dataset.graph, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) return;
          graph.innerHTML = html;
          applyTimes(graph); initCopy(graph);
          var wrap = graph.querySelector(".graph-wrap");
          if (wrap) setBadge(document.querySelector("#wf-state .badge"), wrap.dataset.state);
        }, function () {});
    }
    liveStream(live.dataset.stream, Number(live.dataset.after) || 0, function () {
      if (!timer) timer = setTimeout(redraw, 100);
    }, function () { setTimeout(redraw, 0); document.body.dataset.streamEnded = "true"; });
  }

  function init() {
    initTimes();
    initCopy();
    initTask();
    initWorkflow();
    document.documentElement.dataset.js = "ready";
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
