"""Edge object-detection streaming server.

Subpackages, imported one way (docs/architecture.md has the picture, which tests/test_repo.py holds to the code):
  server.web     the HTTP side: app factory, the ordered start and stop, routes, service, uploads, waitress
  server.models  model files (the inert .pt reader, identification, conversion), engines as a registry, what runs,
                 the device's engine timing
  server.vision  frames: sources, pre/post-processing, detector, tracker, drawing, the stream and its viewers
  server.events  tracked objects as events with snapshots
  server.outputs where events and counts go: a webhook and MQTT with Home Assistant discovery
  server/*.py    the base: config, files, jobs, layout, redaction, storage
"""

from __future__ import annotations


def create_app(config=None, start: bool = True):
    """Build (and start, see server.web.lifecycle) the Flask app (server.web.app); imported lazily so
    `import server.vision` stays light."""
    from server.web.app import create_app as build

    return build(config, start)
