"""Channel-agnostic conversation logic: intents, dialogs, admin commands."""
