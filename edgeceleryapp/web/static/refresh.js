// The job page reloads itself when its job changes (a new state, a new timeline entry), looking
// at the JSON API every few seconds, and stops looking once the job has stopped moving (ended,
// or failed and waiting for a retry). A file, not an inline script: the pages' Content
// Security Policy allows scripts from this site only.
(function () {
  "use strict";
  var page = document.getElementById("job-page");
  if (!page || page.dataset.moving !== "yes") {
    return;
  }
  var url = "/api/jobs/" + page.dataset.job;
  var seen = page.dataset.updated + "|" + page.dataset.events;
  var every = Number(page.dataset.refresh) * 1000;
  function look() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (answer) { return answer.ok ? answer.json() : null; })
      .then(function (job) {
        if (job && job.updated_at + "|" + job.events.length !== seen) {
          window.location.reload();
          return;
        }
        window.setTimeout(look, every);
      })
      .catch(function () { window.setTimeout(look, every); });
  }
  window.setTimeout(look, every);
})();
