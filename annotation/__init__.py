"""Human data: similarity and tag studies, participants, responses, aggregation, export."""
