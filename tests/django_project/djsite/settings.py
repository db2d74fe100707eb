"""A small Django project on hueyscope, set up as the docs say.

Paths are relative to this folder, so a copy of the project in a temporary
folder is a project of its own. DJSITE_EVENTS, when set, is handed to
``hueyscope.attach`` explicitly (see shop/apps.py).
"""
import os
from pathlib import Path

import hueyscope

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "test-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "huey.contrib.djhuey",
    "shop",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
        # Worker threads write at once: wait for the lock, do not fail.
        "OPTIONS": {"timeout": 30},
    },
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

HUEY = hueyscope.SqliteHuey("djsite", filename=str(BASE_DIR / "queue.db"))

# Where shop.apps attaches the recorder; None: HUEYSCOPE_EVENTS or ./events.db.
HUEYSCOPE_EVENTS = os.environ.get("DJSITE_EVENTS") or None

# The huey logger configured the Django way, as run_huey's docs suggest.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "djsite %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler",
                             "formatter": "plain"}},
    "loggers": {"huey": {"handlers": ["console"], "level": "INFO"}},
}
