"""Helpers every app uses and that import no app: roles, upload limits, outage
classification, query-string parsing, request types. The layering is written down in
.importlinter."""
