"""Edge object-detection streaming server.

Subpackages, imported one way (web -> models -> vision):
  server.web     the HTTP side: app factory, routes, service, uploads, waitress
  server.models  model files: the inert .pt reader, identification, conversion, ONNX sessions, int8 tuning
  server.vision  frames: sources, pre/post-processing, detector, tracker, drawing, the stream and its viewers
  server.outputs where events and counts go: a webhook and MQTT with Home Assistant discovery (uses vision)
"""

from __future__ import annotations


def create_app(config=None, start: bool = True):
    """Build (and start, see server.web.lifecycle) the Flask app (server.web.app); imported lazily so
    `import server.vision` stays light."""
    from server.web.app import create_app as build

    return build(config, start)
