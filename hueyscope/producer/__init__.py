"""The producer: scenarios that enqueue work into the shared queue."""
