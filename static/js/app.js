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
})();
