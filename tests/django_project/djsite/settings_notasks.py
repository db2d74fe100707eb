"""The same project without the app that defines tasks: a consumer of it
would have nothing to run."""
from djsite.settings import *  # noqa: F401,F403

INSTALLED_APPS = ["django.contrib.contenttypes", "huey.contrib.djhuey"]
