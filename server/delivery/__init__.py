"""After a message leaves: delivery events, recipients, tracked links and provider webhooks."""
