"""The REST API of Likeness: every researcher capability, scriptable without a browser."""
