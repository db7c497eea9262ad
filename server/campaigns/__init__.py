"""CampaignService's use cases: commands, queries, status moves, idempotency, stats and the
live watch, and the port (`ports.Dispatcher`) through which they reach the job system."""
