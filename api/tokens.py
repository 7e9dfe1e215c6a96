"""Named API tokens: made (the key returned once), found by their key, revoked by their
owner. See api.models.ApiToken for what is stored."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from rest_framework.authtoken.models import Token

from api.models import ApiToken

KEY_PREFIX = "lk_"  # tells a named token from DRF's 40 hex characters at a glance
SHOWN_CHARACTERS = 8  # of the key, kept to tell tokens apart
LAST_USED_RESOLUTION = timedelta(minutes=1)
NAME_MAX_LENGTH = 100  # ApiToken.name


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def token_create(*, user: Any, name: str) -> tuple[ApiToken, str]:
    """A new token of ``user`` called ``name``, and its key: the only time the key exists
    outside the caller's hands (only its hash is stored)."""
    name = " ".join(name.split())
    if not name:
        raise ValidationError("Give the token a name, e.g. what it is for ('lab server').")
    if len(name) > NAME_MAX_LENGTH:
        raise ValidationError(f"A token's name has at most {NAME_MAX_LENGTH} characters.")
    taken = ValidationError(f"You have a token called {name!r} already: choose another name.")
    if ApiToken.objects.filter(user=user, name=name).exists():
        raise taken
    key = KEY_PREFIX + secrets.token_urlsafe(30)
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction goes on
            token = ApiToken.objects.create(
                user=user, name=name, prefix=key[:SHOWN_CHARACTERS], key_hash=hash_key(key)
            )
    except IntegrityError as exc:  # the same name, sent twice at once (a double submit)
        raise taken from exc
    return token, key


def token_of_key(key: str) -> ApiToken | None:
    """The named token with this key (and its user), or None; marks it used."""
    token = ApiToken.objects.select_related("user").filter(key_hash=hash_key(key)).first()
    if token is not None:
        now = timezone.now()
        ApiToken.objects.filter(pk=token.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
    return token


def tokens_of(user: Any) -> list[ApiToken]:
    return list(ApiToken.objects.filter(user=user))


def login_token_of(user: Any) -> Token | None:
    """The token POST /api/auth/token/ hands out for the researcher's password, if made."""
    return Token.objects.filter(user=user).first()


def token_revoke(*, user: Any, token_id: int) -> ApiToken | None:
    """Revoke one of ``user``'s tokens (another's is not found: None)."""
    token = ApiToken.objects.filter(user=user, pk=token_id).first()
    if token is not None:
        token.delete()
    return token


def login_token_revoke(*, user: Any) -> bool:
    """Revoke the password-login token; the next POST /api/auth/token/ makes a new one."""
    deleted, _ = Token.objects.filter(user=user).delete()
    return bool(deleted)
