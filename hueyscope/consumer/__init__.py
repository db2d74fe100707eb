"""The consumer: huey's consumer with the recorder, runs and heartbeats."""
