// Dashboard pages: small behaviours that would otherwise be inline event handlers, which the
// Content-Security-Policy forbids. Optional: without JavaScript the forms have a submit button.
(function () {
  "use strict";
  // <select data-autosubmit>: choosing an option submits its form (e.g. the compare page's
  // target, which decides which models can be chosen).
  document.addEventListener("change", function (event) {
    var field = event.target;
    if (field.matches && field.matches("select[data-autosubmit]") && field.form) {
      field.form.requestSubmit();
    }
  });

  // <a class="clip" data-clip href="(the clip)"><img (its poster frame)></a>: a video stimulus.
  // A plain click plays it in place, muted and looping, with its controls; without JavaScript
  // (or with a modifier key, to open it elsewhere) the link opens the file itself.
  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a[data-clip]") : null;
    if (!link || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) {
      return;
    }
    event.preventDefault();
    var poster = link.querySelector("img");
    var video = document.createElement("video");
    video.className = link.className;
    video.muted = true;
    video.loop = true;
    video.controls = true;
    video.playsInline = true;
    video.preload = "auto";
    video.title = link.title.replace(/^Play /, "");
    if (poster) { video.poster = poster.src; }
    video.src = link.getAttribute("href");
    link.replaceWith(video);
    video.play().catch(function () {}); // refused (rare when muted): its controls still play it
  });

  // <section data-loading-section hx-get=...>: a section of a page loaded after the page (the
  // compare page's). htmx 2 swaps no 4xx/5xx answer, which would leave "Computing…" forever:
  // say what failed instead, keeping the section's link that shows it without JavaScript.
  function sectionFailed(event) {
    var section = event.detail && event.detail.elt;
    if (!section || !section.matches || !section.matches("[data-loading-section]")) { return; }
    var status = section.querySelector("[role=status]");
    if (!status) { return; }
    var xhr = event.detail.xhr;
    var said = "";
    if (xhr && xhr.status) {
      var type = xhr.getResponseHeader("Content-Type") || "";
      said = type.indexOf("text/plain") === 0 ? xhr.responseText.slice(0, 500) : xhr.statusText;
      said = "This section could not be computed (HTTP " + xhr.status + (said ? ": " + said : "") + "). ";
    } else {
      said = "This section could not be loaded (no answer from the server). ";
    }
    var fallback = status.querySelector("a");
    status.textContent = said;
    if (fallback) {
      fallback.textContent = "Try showing every section at once";
      status.appendChild(fallback);
      status.appendChild(document.createTextNode("."));
    }
    status.setAttribute("role", "alert");
    status.className = "errors";
    section.setAttribute("aria-busy", "false");
  }
  document.addEventListener("htmx:responseError", sectionFailed);
  document.addEventListener("htmx:sendError", sectionFailed);
})();
