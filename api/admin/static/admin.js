// Longform admin UI: a little plain JavaScript, no framework. Everything it puts in the page
// is HTML the server rendered (and escaped); it never builds markup from data itself.
(function () {
  "use strict";
  var FINAL = { succeeded: true, failed: true, cancelled: true };

  function load(url, target) {
    return fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (r) {
        if (r.status === 401) { window.location.href = "/admin/login"; return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) { if (html !== null && target) { target.innerHTML = html; } return html; })
      .catch(function () { return null; });
  }

  // Periodic refresh: <div data-refresh="/admin/fragments/..." data-every="3000">
  document.querySelectorAll("[data-refresh]").forEach(function (el) {
    var every = parseInt(el.getAttribute("data-every") || "3000", 10);
    setInterval(function () {
      if (!document.hidden) { load(el.getAttribute("data-refresh"), el); }
    }, every);
  });

  // Live job: <div data-fragment="..." data-events="..."> re-renders on each event of the job's
  // Server-Sent Events stream (at most every 400 ms), one last time when the job ends.
  document.querySelectorAll("[data-events]").forEach(function (el) {
    var source = new EventSource(el.getAttribute("data-events"));
    var pending = null, done = false;
    function refresh() {
      if (pending) { return; }
      pending = setTimeout(function () {
        pending = null;
        load(el.getAttribute("data-fragment"), el).then(function () {
          if (done) { document.body.setAttribute("data-job-finished", "1"); }
        });
      }, 400);
    }
    ["progress", "log", "message"].forEach(function (type) { source.addEventListener(type, refresh); });
    source.addEventListener("status", function (event) {
      var data = {};
      try { data = JSON.parse(event.data); } catch (e) { /* ignore */ }
      if (FINAL[data.status]) {
        done = true;
        source.close();
        // The page's actions (cancel, retry) depend on the final status: load it all again.
        setTimeout(function () { window.location.reload(); }, 300);
        return;
      }
      refresh();
    });
    source.onerror = function () { if (done) { source.close(); } };
  });

  // Click to load into a target: <button data-fetch="url" data-into="#id">
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("[data-fetch]") : null;
    if (!button) { return; }
    event.preventDefault();
    var target = document.querySelector(button.getAttribute("data-into"));
    if (target) {
      target.classList.remove("muted");
      load(button.getAttribute("data-fetch"), target);
    }
  });

  // Ask before a form that cannot be undone: <form data-confirm="Delete this job?">
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute && event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });

  // "Select all" checkbox: <input type="checkbox" data-check-all="job">
  document.addEventListener("change", function (event) {
    var name = event.target.getAttribute && event.target.getAttribute("data-check-all");
    if (!name) { return; }
    document.querySelectorAll('input[type="checkbox"][name="' + name + '"]').forEach(function (box) {
      box.checked = event.target.checked;
    });
  });
})();
