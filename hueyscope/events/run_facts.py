"""What a process's row in ``runs`` says of it: versions, the queue's engine,
the periodic tasks it declares, its role when it does not say."""
import json
import multiprocessing
import sqlite3
import sys


def versions():
    import huey

    try:
        from importlib.metadata import version

        ours = version("hueyscope")
    except Exception:
        ours = "unknown"
    return json.dumps({
        "hueyscope": ours, "huey": huey.__version__,
        "python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version,
    })


def backend(huey):
    """sqlite, postgresql, redis, memory: the queue's engine, whatever the class."""
    from huey import storage as huey_storage

    for base, name in ((huey_storage.SqliteStorage, "sqlite"),
                       (huey_storage.PostgresStorage, "postgresql"),
                       (huey_storage.RedisStorage, "redis"),
                       (huey_storage.MemoryStorage, "memory")):
        if isinstance(huey.storage, base):
            return name
    return type(huey.storage).__name__


def declared_periodic(huey, role, periodic):
    """JSON list of the task names huey's registry declares periodic.

    Recorded, not inferred from timing: a task a consumer re-enqueues (a
    retry, a delayed task) looks periodic, and is not.
    """
    if role != "consumer":
        return None
    if not periodic:
        return "[]"
    try:
        return json.dumps(sorted(t.name for t in huey._registry.periodic_tasks))
    except Exception:  # a registry of another shape: say nothing
        return None


def default_role():
    """The role of a process that records without saying what it is."""
    # huey_consumer's scheduler process (a multiprocessing child it names
    # "Scheduler") enqueues due and periodic tasks: it is part of a consumer.
    if multiprocessing.parent_process() is not None and \
            multiprocessing.current_process().name == "Scheduler":
        return "consumer"
    return "producer"
