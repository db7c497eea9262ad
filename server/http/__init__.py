"""The tracking HTTP entry point (WSGI): pixels, click redirects, unsubscribe pages, webhooks."""
