/* The console's only script: the audience form shows the audience's size as the rule is
 * typed (the "preview" button does the same without script). */
(function () {
  "use strict";
  function start() {
    var form = document.querySelector("form[action='/console/audiences']");
    var out = document.getElementById("live-preview");
    if (!form || !out) { return; }
    var timer = null;
    var seq = 0;
    function run() {
      var rule = form.elements.rule.value.trim();
      if (!rule) { out.textContent = ""; return; }
      var data = new URLSearchParams();
      data.set("csrf", form.elements.csrf.value);
      data.set("purpose", form.elements.purpose.value);
      data.set("rule", rule);
      var mine = ++seq;
      fetch("/console/audiences/preview", { method: "POST", body: data, credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (j) {
          if (mine !== seq) { return; }
          out.textContent = j.error ? j.message
            : j.size + " " + out.dataset.people + " (" + j.matching + " " + out.dataset.match + ", " + j.not_lawful + " " + out.dataset.excluded + ")";
        })
        .catch(function () { /* the button still works */ });
    }
    form.elements.rule.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(run, 350); });
    form.elements.purpose.addEventListener("change", run);
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
