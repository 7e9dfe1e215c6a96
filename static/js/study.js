// Participant pages: keyboard shortcuts, response times and tag autocomplete.
// Everything here is optional: without JavaScript the forms post normally.
(function () {
  "use strict";
  var shownAt = performance.now();

  function trialForm() { return document.querySelector("#trial form"); }

  function onTrialShown() {
    shownAt = performance.now();
    var first = document.querySelector("#trial [autofocus]");
    if (first) { first.focus(); }
  }

  // Response time: from the moment the trial appeared to the submission.
  document.addEventListener("submit", function (event) {
    var field = event.target.querySelector("input[name=rt_ms]");
    if (field) { field.value = Math.round(performance.now() - shownAt); }
  }, true);
  document.addEventListener("htmx:configRequest", function (event) {
    if (event.detail.parameters && "rt_ms" in event.detail.parameters) {
      event.detail.parameters.rt_ms = Math.round(performance.now() - shownAt);
    }
  });
  document.addEventListener("htmx:afterSwap", onTrialShown);
  document.addEventListener("DOMContentLoaded", onTrialShown);

  var ARROWS = { ArrowLeft: "first", ArrowDown: "2", ArrowRight: "last" };

  document.addEventListener("keydown", function (event) {
    var form = trialForm();
    if (!form || event.ctrlKey || event.metaKey || event.altKey) { return; }
    var target = event.target;
    if (target && (target.tagName === "INPUT" && target.type === "text" || target.tagName === "TEXTAREA")) {
      return; // typing tags
    }
    var buttons = form.querySelectorAll("button[data-key]");
    if (!buttons.length) { return; }
    var button = null;
    if (/^[0-9]$/.test(event.key)) {
      button = form.querySelector('button[data-key="' + event.key + '"]');
    } else if (ARROWS[event.key] && form.querySelector("button.choice")) {
      var where = ARROWS[event.key];
      button = where === "first" ? buttons[0] : where === "last" ? buttons[buttons.length - 1]
        : (buttons.length === 3 ? buttons[1] : null);
    }
    if (button) {
      event.preventDefault();
      button.click();
    }
  });

  // Tag autocomplete from the study's vocabulary, for the tag being typed (after the last comma).
  var pending = null;
  document.addEventListener("input", function (event) {
    var input = event.target;
    if (!input.matches || !input.matches("input[data-suggest]")) { return; }
    var parts = input.value.split(",");
    var current = parts.pop().trim();
    var before = parts.map(function (p) { return p.trim(); }).filter(Boolean);
    clearTimeout(pending);
    if (current.length < 1) { return; }
    pending = setTimeout(function () {
      fetch(input.dataset.suggest + "?q=" + encodeURIComponent(current), { credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.json() : { tags: [] }; })
        .then(function (data) {
          var list = document.getElementById(input.getAttribute("list"));
          if (!list) { return; }
          list.innerHTML = "";
          data.tags.forEach(function (tag) {
            var option = document.createElement("option");
            option.value = before.concat([tag]).join(", ");
            list.appendChild(option);
          });
        });
    }, 150);
  });
})();
