"""The command gateway: authenticate, validate, stamp, publish, await the outcome."""
