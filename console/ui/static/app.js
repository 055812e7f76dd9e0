// New sync-log rows without reloading: the newest page of the log is
// asked for every data-interval milliseconds, and the rows the table does
// not hold yet are put in their place (newest first). Rows come rendered
// by the server (escaped by its templates). When the session has ended,
// the server says so and the page goes to the sign-in page.
(function () {
  "use strict";
  var table = document.getElementById("log");
  if (!table || !table.dataset.poll) { return; }
  var body = table.tBodies[0];
  var live = document.getElementById("live");
  var interval = parseInt(table.dataset.interval, 10) || 1000;
  var busy = false;

  function rowsHTML(html) {
    var t = document.createElement("tbody");
    t.innerHTML = html;
    return t.firstElementChild;
  }

  function poll() {
    if (busy || document.hidden) { return; }
    busy = true;
    fetch(table.dataset.poll, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) {
        return r.json().then(function (data) { return { status: r.status, data: data }; });
      })
      .then(function (res) {
        if (res.status === 401 && res.data.location) {
          window.location.assign(res.data.location);
          return;
        }
        if (res.status !== 200) { return; }
        var added = 0;
        // Rows arrive newest first; each unseen one goes before the first
        // shown row that is older (by position in the answer).
        var rows = res.data.rows;
        for (var i = rows.length - 1; i >= 0; i--) {
          if (document.getElementById("row-" + rows[i].id)) { continue; }
          var tr = rowsHTML(rows[i].html);
          // Before the first older row already shown; at the top when none is.
          var next = null;
          for (var k = i + 1; k < rows.length && !next; k++) {
            next = document.getElementById("row-" + rows[k].id);
          }
          body.insertBefore(tr, next || body.firstChild);
          tr.classList.add("new");
          added++;
        }
        if (added > 0) {
          var empty = document.getElementById("empty");
          if (empty) { empty.remove(); }
          if (live) { live.textContent = live.dataset.template.replace("0", String(added)); }
        }
        var slot = document.getElementById("health-slot");
        if (slot && typeof res.data.health === "string") { slot.innerHTML = res.data.health; }
      })
      .catch(function () { /* the next poll tries again */ })
      .then(function () { busy = false; });
  }
  window.setInterval(poll, interval);
})();
