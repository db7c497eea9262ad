"""The pure core: domain rules in the standard library only (errors, validation, the status
machine, channels, the clock, SMS parts). Everything else may import it; it imports nothing."""
