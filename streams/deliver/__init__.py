"""The deliverer process (`segstream deliver`): segment changes to signed webhooks.

:mod:`.deliverer` consumes the change topic and sends each destination's changes;
:mod:`.destinations_feed` follows the published destinations file; :mod:`.offsets`
commits each partition up to its lowest change still open; :mod:`.metrics` holds
the deliverer's Prometheus metrics.
"""
