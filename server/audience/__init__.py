"""AudienceService's use cases: editions, users and their imports, segments."""
