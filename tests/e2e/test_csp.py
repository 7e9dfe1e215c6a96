"""The Content-Security-Policy in a real browser: Chromium reports no violation on a
participant's whole session (htmx swapping every trial in place), on dashboard pages that
htmx updates, on the compare page (its target list submits itself from static JS) and on the
API documentation; a script link in the consent text is gone."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from annotation import services
from annotation.services import ItemPlan
from evaluation.models import Target
from tests.conftest import make_text_dataset
from tests.e2e.conftest import screenshot
from tests.evaluation.test_leaderboards import add_model, add_score
from tests.factories import RunFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Chromium logs each blocked resource or inline script to the console; the listener also
# reports the violation events themselves (added before any page script runs).
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => {
  console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI} ` +
                `at ${e.sourceFile}:${e.lineNumber} (${e.sample})`);
});
"""


def watch_violations(page) -> list[str]:
    violations: list[str] = []

    def on_console(message) -> None:
        text = message.text
        if "Content Security Policy" in text or "CSP violation" in text:
            violations.append(f"{page.url}: {text}")

    page.on("console", on_console)
    page.add_init_script(REPORT_VIOLATIONS)
    return violations


def assert_enforced(page, violations: list[str]) -> None:
    """No violation so far, and the browser does enforce the policy on this page: an inline
    script put into it (as injected markup would be) does not run, and is reported."""
    assert not violations, "\n".join(violations)
    ran = page.evaluate(
        """() => { window.injectedRan = false; const s = document.createElement('script');
        s.textContent = 'window.injectedRan = true'; document.body.append(s);
        return window.injectedRan; }"""
    )
    assert ran is False, f"{page.url}: an inline script ran: no Content-Security-Policy"
    expect(page.locator("body")).to_be_attached()
    page.wait_for_timeout(200)  # console messages arrive asynchronously
    assert violations, f"{page.url}: the blocked inline script was not reported"


def test_a_participant_session_runs_without_violations(page, live_server, researcher):
    study = services.study_create(
        dataset=make_text_dataset(),
        name="CSP pairs",
        kind="pairs",
        items=ItemPlan(),
        judgments_per_item=3,
        trials_per_session=3,
        practice_trials=1,
        consent_md="Read [this](javascript:alert(document.cookie)) and **agree**.",
        instructions_md="See [the lab](https://example.org/lab).",
        created_by=researcher,
    )
    services.study_set_status(study=study, status="open")
    violations = watch_violations(page)

    page.goto(f"{live_server.url}{study.participant_url()}?PROLIFIC_PID=csp-1")
    expect(page.locator(".consent strong")).to_have_text("agree")
    assert page.locator("a[href^='javascript']").count() == 0
    expect(page.locator(".instructions a")).to_have_attribute("href", "https://example.org/lab")
    page.get_by_label(re.compile("agree to take part")).check()
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(re.compile(r"/p/[\w-]+/$"))
    page.evaluate("window.sameDocument = true")
    for number in range(1, 5):
        expect(page.locator("#trial > p.muted")).to_contain_text(f"Trial {number} of 4")
        expect(page.locator("#trial.htmx-added")).to_have_count(0)
        assert page.evaluate("window.sameDocument === true"), "not swapped in place by htmx"
        progress = page.locator("progress.trial-progress")
        assert progress.get_attribute("value") == str(number - 1)
        assert progress.bounding_box()["width"] > 100  # styled from app.css, not inline
        page.keyboard.press(str(number + 2))
    page.wait_for_url(re.compile(r"/done/$"))
    expect(page.locator("#completion-code")).to_have_text(study.completion_code)
    screenshot(page, "csp-participant-done")
    assert_enforced(page, violations)


def test_dashboard_pages_swap_with_htmx_without_violations(page, live_server, researcher):
    dataset = make_text_dataset()
    target = Target.objects.get(dataset=dataset)
    run = RunFactory(dataset=dataset)
    for name, source, value in [
        ("vit", "timm", 0.9),
        ("resnet", "timm", 0.8),
        ("tfidf", "baseline", 0.6),
    ]:
        add_score(run, add_model(name, source=source, params=1_000_000), target, "knn(k=5)", value)
    violations = watch_violations(page)

    page.goto(f"{live_server.url}/accounts/login/?next=/compare/")
    page.get_by_label("Username").fill("rita")
    page.get_by_label("Password").fill("rita-pass-123")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/compare/")
    page.goto(f"{live_server.url}/leaderboards/{target.pk}/")
    page.evaluate("window.sameDocument = true")
    swaps = page.evaluate(
        "window.swaps = 0; document.body.addEventListener('htmx:afterSwap', () => window.swaps++); 0"
    )
    assert swaps == 0
    page.get_by_label("Source").select_option("timm")
    page.wait_for_url(re.compile(r"source=timm"))
    page.wait_for_function("document.querySelectorAll('table.leaderboard tbody tr').length == 2")
    assert page.evaluate("window.sameDocument === true && window.swaps > 0"), "htmx did not swap"
    # htmx's indicator styles come from app.css now: an indicator stays hidden when idle.
    hidden = page.evaluate(
        """() => { const e = document.createElement('span'); e.className = 'htmx-indicator';
        document.body.append(e); const s = getComputedStyle(e);
        return s.opacity === '0' && s.visibility === 'hidden'; }"""
    )
    assert hidden, "the htmx indicator rules are missing from app.css"

    # The compare page's target list submits its form from static/js/app.js.
    page.goto(f"{live_server.url}/compare/")
    page.evaluate("window.sameDocument = true")
    page.get_by_label("Target").select_option(str(target.pk))
    page.wait_for_url(re.compile(rf"target={target.pk}"))
    expect(page.locator("fieldset legend")).to_contain_text("Models with cached embeddings")
    assert page.evaluate("window.sameDocument === undefined"), "the form was not submitted"
    assert_enforced(page, violations)


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_the_api_documentation_renders_without_violations(page, live_server, path):
    violations = watch_violations(page)
    page.goto(f"{live_server.url}{path}")
    # Both render the schema's title once they have fetched and read it.
    expect(page.get_by_text("Likeness API").first).to_be_visible()
    if path == "/api/docs/":
        expect(page.locator(".opblock").first).to_be_visible()
    screenshot(page, f"csp-api-{path.strip('/').replace('/', '-')}")
    # Redoc's footer logo comes from its CDN: blocked on purpose (nothing is loaded from
    # outside; offline it would not load anyway). Anything else is a violation.
    outside = re.compile(r"img-src.*https://cdn\.redoc\.ly/|https://cdn\.redoc\.ly/.*img-src")
    unexpected = [v for v in violations if not (path == "/api/redoc/" and outside.search(v))]
    assert not unexpected, "\n".join(unexpected)
