// Multi-arrangement: drag items into a circular arena (pointer events: mouse, pen and
// touch), or move them with the keyboard. The answer is the hidden "arrangement" field:
// JSON [[stimulus id, x, y, moves], ...] in the trial's order, x to the right and y down in
// arena radii from the centre (inside: x² + y² <= 1), moves the drags or keyboard moves
// that placed the item, the one that brought it into the circle included: 1 is an item
// dropped once and never adjusted (the server's "items never moved" rule counts those).
// The server checks all of it again (annotation/services/arrangements.py).
(function () {
  "use strict";
  var DRAG_THRESHOLD = 4; // px: less is a tap (plays a clip), not a move
  var KEY_STEP = 0.02, KEY_STEP_FAST = 0.1; // arena radii per arrow key press
  var GAP = 8; // px between tray slots

  function setUp() {
    var trial = document.getElementById("trial");
    if (!trial || trial.getAttribute("data-kind") !== "arrangement") { return; }
    if (trial.hasAttribute("data-arena-ready")) { return; }
    trial.setAttribute("data-arena-ready", "");
    new Arena(trial);
  }

  function Arena(trial) {
    this.wrap = trial.querySelector("[data-arena]");
    this.circle = trial.querySelector(".arena");
    this.form = trial.querySelector("form");
    this.field = this.form.querySelector("input[name=arrangement]");
    this.done = this.form.querySelector(".arena-done");
    this.status = trial.querySelector(".arena-status");
    var elements = Array.prototype.slice.call(this.wrap.querySelectorAll(".arena-item"));
    // Position of each item in arena radii (null: still in the tray), and its moves.
    this.items = elements.map(function (element, slot) {
      return { element: element, slot: slot, x: null, y: null, moves: 0 };
    });
    this.text = elements.length > 0 && elements.every(function (element) {
      return element.classList.contains("text");
    });
    this.layout();
    this.items.forEach(this.bind, this);
    var arena = this;
    window.addEventListener("resize", function () { arena.layout(); });
    this.form.addEventListener("submit", function () { arena.write(); }, true);
    document.addEventListener("htmx:configRequest", function (event) {
      if (event.detail.elt === arena.form || arena.form.contains(event.detail.elt)) {
        event.detail.parameters.arrangement = arena.write();
      }
    });
    this.update();
  }

  // Sizes follow the page width, so a phone gets a smaller arena that works the same way.
  Arena.prototype.layout = function () {
    var width = this.wrap.clientWidth;
    this.size = Math.max(36, Math.min(76, Math.round(width * 0.11)));
    // A sentence needs width to be read: text items are twice as wide as they are tall.
    this.itemWidth = this.text ? 2 * this.size : this.size;
    this.itemHeight = this.size;
    // Where the wrap reaches the edge of the page (a phone), the circle keeps half an item
    // clear of it: an item on the rim would otherwise widen the page and let it scroll sideways.
    var box = this.wrap.getBoundingClientRect();
    var margin = Math.min(box.left, document.documentElement.clientWidth - box.right);
    this.inset = Math.max(0, Math.ceil(this.itemWidth / 2 - Math.max(0, margin)));
    this.radius = width / 2 - this.inset;
    this.circle.style.left = this.circle.style.top = this.inset + "px";
    this.circle.style.width = this.circle.style.height = 2 * this.radius + "px";
    var perRow = Math.max(1, Math.floor((width + GAP) / (this.itemWidth + GAP)));
    this.trayTop = width - this.inset + 2 * GAP;
    var rows = Math.ceil(this.items.length / perRow);
    this.wrap.style.height = (this.trayTop + rows * (this.itemHeight + GAP)) + "px";
    this.perRow = perRow;
    this.items.forEach(function (item) {
      item.element.style.width = this.itemWidth + "px";
      item.element.style.height = this.itemHeight + "px";
      this.place(item);
    }, this);
  };

  Arena.prototype.trayPixel = function (item) {
    var column = item.slot % this.perRow, row = Math.floor(item.slot / this.perRow);
    return {
      left: column * (this.itemWidth + GAP) + this.itemWidth / 2,
      top: this.trayTop + row * (this.itemHeight + GAP) + this.itemHeight / 2,
    };
  };

  // Draw an item where its state says: in the arena (radii) or at its tray slot.
  Arena.prototype.place = function (item) {
    var centre = this.inset + this.radius;
    var at = item.x === null ? this.trayPixel(item)
      : { left: centre + item.x * this.radius, top: centre + item.y * this.radius };
    item.element.style.left = (at.left - this.itemWidth / 2) + "px";
    item.element.style.top = (at.top - this.itemHeight / 2) + "px";
    item.element.classList.toggle("placed", item.x !== null);
  };

  // A drop at a pixel of the wrap: inside the circle it is placed there; outside, back to
  // the tray.
  Arena.prototype.drop = function (item, left, top) {
    var centre = this.inset + this.radius;
    var x = (left - centre) / this.radius, y = (top - centre) / this.radius;
    if (x * x + y * y <= 1) { item.x = x; item.y = y; } else { item.x = item.y = null; }
    item.moves += 1;
    this.place(item);
    this.update();
  };

  Arena.prototype.bind = function (item) {
    var arena = this, element = item.element, drag = null;
    element.addEventListener("pointerdown", function (event) {
      if (event.button !== undefined && event.button !== 0) { return; }
      event.preventDefault(); // no text selection, no native image drag, no scrolling
      element.setPointerCapture(event.pointerId);
      element.focus({ preventScroll: true });
      var box = arena.wrap.getBoundingClientRect();
      var left = parseFloat(element.style.left) + arena.itemWidth / 2;
      var top = parseFloat(element.style.top) + arena.itemHeight / 2;
      drag = { id: event.pointerId, dx: event.clientX - box.left - left,
        dy: event.clientY - box.top - top, startX: event.clientX, startY: event.clientY,
        moved: false };
      element.classList.add("dragging");
    });
    element.addEventListener("pointermove", function (event) {
      if (!drag || event.pointerId !== drag.id) { return; }
      if (Math.abs(event.clientX - drag.startX) + Math.abs(event.clientY - drag.startY) > DRAG_THRESHOLD) {
        drag.moved = true;
      }
      if (!drag.moved) { return; }
      // The wrap measured now, not at the grab: the page may have scrolled under the held
      // item (a mouse wheel turned mid-drag).
      var box = arena.wrap.getBoundingClientRect();
      var left = event.clientX - box.left - drag.dx, top = event.clientY - box.top - drag.dy;
      element.style.left = (left - arena.itemWidth / 2) + "px";
      element.style.top = (top - arena.itemHeight / 2) + "px";
    });
    function end(event) {
      if (!drag || event.pointerId !== drag.id) { return; }
      element.classList.remove("dragging");
      var moved = drag.moved, box = arena.wrap.getBoundingClientRect(), dx = drag.dx, dy = drag.dy;
      drag = null;
      if (!moved) { arena.place(item); toggleClip(element); return; }
      arena.drop(item, event.clientX - box.left - dx, event.clientY - box.top - dy);
    }
    element.addEventListener("pointerup", end);
    element.addEventListener("pointercancel", function (event) {
      if (drag && event.pointerId === drag.id) { drag = null; element.classList.remove("dragging"); arena.place(item); }
    });
    element.addEventListener("keydown", function (event) { arena.key(item, event); });
    // A sound's ▶ shows ❚❚ while it plays. The control is drawn only: the item takes the
    // pointer and the focus (one Tab stop per item), and a tap or P plays it.
    var sound = element.querySelector("audio"), control = element.querySelector(".arena-play");
    if (sound && control) {
      sound.addEventListener("play", function () { control.textContent = "\u275a\u275a"; });
      sound.addEventListener("pause", function () { control.textContent = "\u25b6"; });
    }
    var video = element.querySelector("video[data-hover-play]");
    if (video) {
      element.addEventListener("pointerenter", function (event) {
        if (event.pointerType === "mouse") { video.play().catch(function () {}); }
      });
      element.addEventListener("pointerleave", function (event) {
        if (event.pointerType === "mouse") { video.pause(); }
      });
    }
  };

  function toggleClip(element) {
    var clip = element.querySelector("video, audio");
    if (!clip) { return; }
    if (clip.paused) { clip.play().catch(function () {}); } else { clip.pause(); }
  }

  var ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

  // Keyboard: Enter or Space puts a tray item in the centre of the circle (on a placed item
  // they play or pause it); the arrows move the focused item (Shift: faster), never past the
  // rim. Each key press that changes a position is one move. P plays or pauses the focused
  // item's sound or clip wherever it is, and is no move.
  Arena.prototype.key = function (item, event) {
    var step = ARROWS[event.key];
    if ((event.key === "p" || event.key === "P") && !event.ctrlKey && !event.metaKey && !event.altKey) {
      event.preventDefault();
      toggleClip(item.element);
      return;
    }
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      if (item.x === null) { this.moveTo(item, 0, 0); } else { toggleClip(item.element); }
      return;
    }
    if (!step) { return; }
    event.preventDefault();
    if (item.x === null) { this.moveTo(item, 0, 0); return; }
    var distance = event.shiftKey ? KEY_STEP_FAST : KEY_STEP;
    var x = item.x + step[0] * distance, y = item.y + step[1] * distance;
    var norm = Math.sqrt(x * x + y * y);
    if (norm > 1) { x /= norm; y /= norm; }
    this.moveTo(item, x, y);
  };

  Arena.prototype.moveTo = function (item, x, y) {
    if (item.x === x && item.y === y) { return; } // pressed against the rim: not a move
    item.x = x; item.y = y; item.moves += 1;
    this.place(item);
    this.update();
  };

  Arena.prototype.update = function () {
    var placed = this.items.filter(function (item) { return item.x !== null; }).length;
    this.done.disabled = placed < this.items.length;
    this.status.textContent = placed + " of " + this.items.length + " items in the circle" +
      (placed === this.items.length ? ": arrange them until you are happy, then press Done." : "");
  };

  Arena.prototype.write = function () {
    var value = JSON.stringify(this.items.map(function (item) {
      return [Number(item.element.getAttribute("data-stimulus")), item.x, item.y, item.moves];
    }));
    this.field.value = value;
    return value;
  };

  document.addEventListener("DOMContentLoaded", setUp);
  document.addEventListener("htmx:afterSwap", setUp);
})();
