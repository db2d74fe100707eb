"""The event store: schema, recorder, retention and the shared SQL."""
