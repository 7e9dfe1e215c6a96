"""``Authorization: Token <key>``, for both kinds of token: a named one made on the tokens
page (api.tokens, stored as a hash) or the one POST /api/auth/token/ hands out (DRF's)."""

from __future__ import annotations

from typing import Any

from rest_framework import authentication
from rest_framework.exceptions import AuthenticationFailed

from api.tokens import KEY_PREFIX, token_of_key


class TokenAuthentication(authentication.TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        if not key.startswith(KEY_PREFIX):
            return super().authenticate_credentials(key)  # DRF's Token, or "Invalid token."
        token = token_of_key(key)
        if token is None:
            raise AuthenticationFailed("Invalid token.")
        if not token.user.is_active:
            raise AuthenticationFailed("User inactive or deleted.")
        return token.user, token
