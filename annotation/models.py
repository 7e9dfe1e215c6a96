"""Studies, participants and responses arrive with the human-studies issue; the app exists
now so that its migrations start from the same base as evaluation's."""
