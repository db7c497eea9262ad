"""RQ jobs that carry campaigns from scheduled to sent, and the worker that runs them."""
