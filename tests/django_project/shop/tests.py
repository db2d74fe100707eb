"""Tasks under Django's test runner: immediate mode runs them in-line."""
from django.conf import settings
from django.test import TestCase

from shop.models import Order
from shop.tasks import record_order


class ImmediateTasks(TestCase):
    def setUp(self):
        # huey's immediate mode: tasks run at once, on an in-memory queue.
        settings.HUEY.immediate = True
        self.addCleanup(setattr, settings.HUEY, "immediate", False)

    def test_task_runs_in_line(self):
        pk = record_order(7)()
        self.assertEqual(Order.objects.get(pk=pk).number, 7)
