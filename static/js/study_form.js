// The new-study form: show only the fieldsets and fields the chosen kind of study uses
// (each is marked data-kinds="pairs tags ..."). Hidden ones are disabled too, so that they
// are neither validated by the browser nor sent; the server ignores them either way, so
// without JavaScript every group is shown and the form is still right.
(function () {
  "use strict";
  var form = document.getElementById("study-form");
  if (!form) { return; }
  var kind = form.querySelector("select[name=kind]");
  if (!kind) { return; } // the page was opened for one kind (?kind=): nothing to switch

  function show() {
    var chosen = kind.value;
    form.querySelectorAll("[data-kinds]").forEach(function (element) {
      // Nothing chosen yet: everything, as without JavaScript.
      var used = !chosen || element.dataset.kinds.split(" ").indexOf(chosen) >= 0;
      element.hidden = !used;
      element.querySelectorAll("input, select, textarea").forEach(function (control) {
        if (control !== kind) { control.disabled = !used || control.closest("[hidden]") !== null; }
      });
    });
  }
  // 'All pairs' is for pair studies: triplet and 2AFC studies start from a random subset, as
  // their own form (?kind=) does (tag and arrangement studies send no item fields at all).
  function itemsForKind() {
    var all = form.querySelector("input[name=item_mode][value=all]");
    var random = form.querySelector("input[name=item_mode][value=random]");
    if (all && random && all.checked && kind.value && kind.value !== "pairs") {
      random.checked = true;
    }
  }
  kind.addEventListener("change", function () { itemsForKind(); show(); });
  show();
})();
