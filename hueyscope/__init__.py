"""hueyscope: production background tasks on Huey + SQLite, fully recorded."""


def attach(huey, events=None, **options):
    """Install the hueyscope recorder on ``huey``; returns the Recorder.

    See :func:`hueyscope.events.recorder.attach`.
    """
    from hueyscope.events.recorder import attach as _attach

    return _attach(huey, events=events, **options)


# What a running task can ask (see hueyscope.control), imported when asked for.
_CONTROL = ("cancelled", "check_cancelled", "sleep", "progress", "TaskCanceled")


def __getattr__(name):
    # hueyscope.SqliteHuey and Deduplicated, imported only when asked for.
    if name == "SqliteHuey":
        from hueyscope.queue.sqlite import SqliteHuey

        return SqliteHuey
    if name in _CONTROL:
        from hueyscope import control

        return getattr(control, name)
    if name == "Deduplicated":
        from hueyscope.queue.control import Deduplicated

        return Deduplicated
    raise AttributeError(name)


__all__ = ["attach", "SqliteHuey", "Deduplicated", *_CONTROL]
