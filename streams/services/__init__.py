"""The HTTP services: the collector (trackers' events in) and the read API (segments out).

Both are FastAPI apps run by uvicorn (`serve`), produce through an
:class:`~streams.services.acks.AckingProducer`, and share request metrics and
credentials.
"""
