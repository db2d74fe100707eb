"""Send firing alerts through apprise (``pip install 'hueyscope[alerts]'``).

apprise speaks to about a hundred services from one URL each: mail
(``mailto://``), Slack, Matrix, ntfy, a plain webhook (``json://host/path``
posts ``{"title": ..., "message": ..., "type": ...}``). It is an optional
extra: a command given ``--notify`` without it installed fails at once,
before it checks anything, rather than finding out after an alert fired.

A message quotes the store (task names, task ids, run ids), which is text
any task or any copied-in file can put there. It is sent as plain text: a
mail goes out as text/plain, and a service asked for HTML (``mailto://...
?format=html``) gets it escaped by apprise, so ``<img onerror=...>`` in a
task name arrives as those characters, never as markup. Credentials in it
are redacted as everywhere else (:mod:`hueyscope.redaction`).
"""
import logging

logger = logging.getLogger("hueyscope.alerts")

INSTALL = "pip install 'hueyscope[alerts]'"


def notifier(urls):
    """An apprise.Apprise sending to each of ``urls``.

    Raises ValueError (one line) when apprise is not installed or does not
    understand a URL.
    """
    try:
        import apprise
    except ImportError:
        raise ValueError("--notify needs apprise, which is not installed: "
                         "%s" % INSTALL) from None
    targets = apprise.Apprise()
    for url in urls:
        if not targets.add(url):
            raise ValueError("--notify: apprise does not understand %r (see "
                             "https://github.com/caronc/apprise/wiki)" % url)
    return targets


def send(targets, alerts):
    """Send each alert, one notification each; the number sent everywhere.

    A target that cannot be reached is logged (apprise logs the reason),
    never raised: the alert itself still counts.
    """
    import apprise

    from hueyscope.settings import configured_redaction

    scrub = configured_redaction().text
    sent = 0
    for alert in alerts:
        ok = targets.notify(title="hueyscope alert: %s" % alert.rule,
                            body=scrub(alert.message),
                            notify_type=apprise.NotifyType.FAILURE,
                            body_format=apprise.NotifyFormat.TEXT)
        if ok:
            sent += 1
        else:
            logger.warning("Could not send every notification of %s.", alert.rule)
    return sent
