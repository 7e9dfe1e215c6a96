// Participant pages: keyboard shortcuts, response times, clips and tag autocomplete.
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

  // Clips (video and audio). Videos start by themselves, muted and looping; here their native
  // controls give way to a tap that pauses or plays (a page without JavaScript keeps the
  // controls, and a tap also starts a clip whose autoplay the phone refused).
  //
  // A study with require_playback: the answer buttons stay disabled until every clip of the
  // trial has played once to its end, and the note says so. Only this browser can know that
  // (the server cannot prove a clip was played, and does not try); without JavaScript nothing
  // is held back. "Played" is measured by the media element's own record of the time ranges
  // it played, so dragging to the end does not count.
  var PLAYED_SLACK = 0.3; // seconds: timeupdate fires about 4 times a second

  function playedThrough(clip) {
    var duration = clip.duration;
    if (!isFinite(duration) || duration <= 0) { return false; }
    var covered = 0;
    for (var i = 0; i < clip.played.length; i++) { covered += clip.played.end(i) - clip.played.start(i); }
    return covered >= duration - Math.min(PLAYED_SLACK, duration / 4);
  }

  function togglePlayback(event) {
    var video = event.currentTarget;
    if (video.paused) { video.play().catch(function () {}); } else { video.pause(); }
  }

  function setUpClips() {
    var trial = document.getElementById("trial");
    if (!trial || trial.hasAttribute("data-clips-ready")) { return; } // once per trial shown
    trial.setAttribute("data-clips-ready", "");
    var clips = Array.prototype.slice.call(trial.querySelectorAll("[data-clip]"));
    clips.forEach(function (clip) {
      if (clip.tagName === "VIDEO") {
        clip.controls = false;
        clip.addEventListener("click", togglePlayback);
      }
    });
    var form = trial.querySelector("form");
    if (!form || !clips.length || !trial.hasAttribute("data-require-playback")) { return; }
    var answers = form.querySelectorAll("button:not([type]), button[type=submit], input[type=submit]");
    var note = document.getElementById("playback-note");

    function update() {
      var left = clips.filter(function (clip) { return !clip.hasAttribute("data-played"); }).length;
      Array.prototype.forEach.call(answers, function (button) { button.disabled = left > 0; });
      form.toggleAttribute("data-waiting", left > 0);
      if (note) {
        note.hidden = false;
        note.classList.toggle("done", left === 0);
        note.textContent = left === 0 ? "Every clip has played: you can answer now."
          : "The answer buttons unlock once each clip has played to its end (" +
            (clips.length - left) + " of " + clips.length + " so far).";
      }
    }
    clips.forEach(function (clip) {
      function check() {
        if (!clip.hasAttribute("data-played") && playedThrough(clip)) {
          clip.setAttribute("data-played", "");
          update();
        }
      }
      clip.addEventListener("timeupdate", check);
      clip.addEventListener("ended", check);
    });
    update();
  }

  // An answer while clips are still due (the buttons are disabled, but a form can be sent
  // other ways) goes nowhere; stopping it here also keeps htmx from posting it.
  document.addEventListener("submit", function (event) {
    if (event.target.hasAttribute && event.target.hasAttribute("data-waiting")) {
      event.preventDefault();
      event.stopPropagation();
    }
  }, true);
  document.addEventListener("htmx:afterSwap", setUpClips);
  document.addEventListener("DOMContentLoaded", setUpClips);

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
