"""Application wiring: configuration, CLI, channel adapters, HTTP server, scheduler, notifier."""
