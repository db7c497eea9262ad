"""How a message leaves: compose, MIME, providers, the circuit breaker, the rate limit and what
each outcome makes of its row. It runs no SQL: the pipeline hands it rows and records what it
hands back."""
