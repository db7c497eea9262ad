"""Who may call: bearer tokens, the port's transport (TLS), and the organization scope of a call."""
