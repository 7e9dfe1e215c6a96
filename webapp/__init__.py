"""Likeness Django project: settings, URLs, authentication and the dashboard shell."""
