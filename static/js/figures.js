// Zoom and pan for large figures (templates/evaluation/_figure.html): matrices and scatters
// carry the class "zoomable". The SVG itself stays static and complete, readable without
// JavaScript (hover titles name each cell); this only moves its viewBox. The zoom buttons are
// in the page's markup, hidden until this script shows them; figures that htmx swaps in later
// (the compare page's sections) are set up on htmx:load.
(function () {
  "use strict";

  var MAX_ZOOM = 16;

  function setUp(root) {
    root.querySelectorAll("figure.figure .figure-zoom[hidden]").forEach(function (controls) {
      var svg = controls.closest("figure").querySelector("svg.zoomable");
      if (svg) zoomable(svg, controls);
    });
  }

  function zoomable(svg, controls) {
    var box = svg.viewBox.baseVal;
    var full = { x: box.x, y: box.y, w: box.width, h: box.height };
    var view = { x: full.x, y: full.y, w: full.w, h: full.h };
    controls.hidden = false;

    function show() {
      // Keep the view inside the figure and no smaller than 1/MAX_ZOOM of it.
      view.w = Math.min(full.w, Math.max(full.w / MAX_ZOOM, view.w));
      view.h = view.w * full.h / full.w;
      view.x = Math.min(full.x + full.w - view.w, Math.max(full.x, view.x));
      view.y = Math.min(full.y + full.h - view.h, Math.max(full.y, view.y));
      svg.setAttribute("viewBox", [view.x, view.y, view.w, view.h].join(" "));
      svg.classList.toggle("zoomed", view.w < full.w);
    }

    function zoom(factor, cx, cy) {
      var w = view.w / factor;
      view.x = cx - (cx - view.x) * (w / view.w);
      view.y = cy - (cy - view.y) * (w / view.w);
      view.w = w;
      show();
    }

    controls.addEventListener("click", function (event) {
      var button = event.target.closest("button[data-zoom]");
      if (!button) return;
      var centre = { x: view.x + view.w / 2, y: view.y + view.h / 2 };
      if (button.dataset.zoom === "in") zoom(2, centre.x, centre.y);
      else if (button.dataset.zoom === "out") zoom(0.5, centre.x, centre.y);
      else { view = { x: full.x, y: full.y, w: full.w, h: full.h }; show(); }
    });

    // Ctrl + wheel zooms at the pointer; a plain wheel still scrolls the page.
    svg.addEventListener("wheel", function (event) {
      if (!event.ctrlKey) return;
      event.preventDefault();
      var point = toView(event);
      zoom(event.deltaY < 0 ? 1.25 : 0.8, point.x, point.y);
    }, { passive: false });

    // Drag to pan once zoomed in: with the main button only (a right or middle click keeps
    // its own meaning: the context menu, opening a link).
    var drag = null;
    svg.addEventListener("pointerdown", function (event) {
      if (event.button !== 0 || view.w >= full.w) return;
      drag = { x: event.clientX, y: event.clientY, view: { x: view.x, y: view.y } };
      svg.setPointerCapture(event.pointerId);
    });
    svg.addEventListener("pointermove", function (event) {
      if (!drag) return;
      var scale = view.w / svg.getBoundingClientRect().width;
      view.x = drag.view.x - (event.clientX - drag.x) * scale;
      view.y = drag.view.y - (event.clientY - drag.y) * scale;
      show();
    });
    ["pointerup", "pointercancel"].forEach(function (type) {
      svg.addEventListener(type, function () { drag = null; });
    });

    function toView(event) {
      var rect = svg.getBoundingClientRect();
      return {
        x: view.x + (event.clientX - rect.left) / rect.width * view.w,
        y: view.y + (event.clientY - rect.top) / rect.height * view.h,
      };
    }
  }

  document.addEventListener("DOMContentLoaded", function () { setUp(document); });
  document.addEventListener("htmx:load", function (event) { setUp(event.target); });
})();
