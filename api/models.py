"""API tokens a researcher names, creates and revokes on the tokens page (api/token_views.py).

Only the SHA-256 of a key is stored: the key itself is shown once, when it is made, and a
copy of the database cannot be used to call the API. The first characters are kept to tell
tokens apart on the page. (The token that POST /api/auth/token/ hands out for a username and
password is DRF's, one per researcher, and is listed on the same page.)
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiToken(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, help_text="What it is for, e.g. 'laptop notebook'.")
    prefix = models.CharField(max_length=12, help_text="The key's first characters.")
    key_hash = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the key, hex.")
    created_at = models.DateTimeField(default=timezone.now)
    # Updated at most once a minute (api.tokens.LAST_USED_RESOLUTION): not a write per request.
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "name"], name="api_token_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
