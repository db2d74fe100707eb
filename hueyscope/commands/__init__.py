"""The command line's commands that act on the queue: thin callers of :mod:`hueyscope.queue`."""
