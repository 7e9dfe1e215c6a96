"""Who may use the API.

The product rule: only researchers (active staff accounts, ``core.auth.is_researcher``)
launch runs or see raw data (models' cards, stimuli, judgments, studies, runs). Viewers may
read public leaderboards, so scores and their targets, the numbers a leaderboard shows,
are readable by anyone; writing them is never possible through the API. Anonymous callers
of a researcher endpoint get 401 (with ``WWW-Authenticate: Token``), logged-in
non-researchers (participants with an account, say) get 403.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from core.auth import is_researcher

RESEARCHERS_ONLY = "Only researchers (active staff accounts) can use this endpoint."


class IsResearcher(BasePermission):
    message = RESEARCHERS_ONLY

    def has_permission(self, request: Request, view: Any) -> bool:
        return is_researcher(request.user)


class PublicReadResearcherWrite(BasePermission):
    """Leaderboard data: anyone reads, only researchers write."""

    message = RESEARCHERS_ONLY

    def has_permission(self, request: Request, view: Any) -> bool:
        return request.method in SAFE_METHODS or is_researcher(request.user)
