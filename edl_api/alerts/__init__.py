"""Alerts by webhook: events (a failed run, a held feed, a failing source, a stale feed or
device, a device near capacity) written to an outbox and sent, signed, by a worker."""
