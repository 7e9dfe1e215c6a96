"""The researcher's API tokens page: make a named token (its key shown once, in full, on
the page that answers the form, never stored), see one's tokens, revoke one. Linked from
the user menu and from the API docs' description."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from api import tokens
from core.auth import researcher_required


class TokenForm(forms.Form):
    name = forms.CharField(
        label="Name",
        max_length=tokens.NAME_MAX_LENGTH,
        help_text="What the token is for, e.g. 'lab server' or 'laptop notebook'.",
    )


@never_cache  # the answer to a POST holds a key: no copy in any cache
@researcher_required
def token_list(request: HttpRequest) -> HttpResponse:
    """GET: the researcher's tokens and the form. POST: make a token and show its key."""
    form = TokenForm(request.POST or None)
    new_key = ""
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                _token, new_key = tokens.token_create(
                    user=request.user, name=form.cleaned_data["name"]
                )
            except ValidationError as exc:
                form.add_error("name", exc)
        if not new_key:
            status = 400
        else:
            form = TokenForm()
    return render(
        request,
        "api/tokens.html",
        {
            "form": form,
            "new_key": new_key,
            "tokens": tokens.tokens_of(request.user),
            "login_token": tokens.login_token_of(request.user),
        },
        status=status,
    )


@researcher_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = tokens.token_revoke(user=request.user, token_id=token_id)
    if token is None:  # another researcher's, or gone already: not told apart
        raise Http404(f"You have no token with id {token_id}.")
    messages.success(request, f"Revoked {token.name}: requests with its key now get 401.")
    return redirect("api:tokens")


@researcher_required
@require_POST
def login_token_revoke(request: HttpRequest) -> HttpResponse:
    if not tokens.login_token_revoke(user=request.user):
        raise Http404("You have no password-login token.")
    messages.success(
        request,
        "Revoked your password-login token: POST /api/auth/token/ makes a new one.",
    )
    return redirect("api:tokens")
