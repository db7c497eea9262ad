"""What a message says: email messages, templates and the Jinja sandbox they compile in."""
