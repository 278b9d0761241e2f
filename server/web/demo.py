"""`run.py --demo`: load the demo video and model as if a user had uploaded them, and start streaming."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from server.demo import DEMO_ONNX, DEMO_VIDEO_NAME
from server.demo.video import write_demo_video
from server.web.service import DetectionService

logger = logging.getLogger(__name__)


def start_demo(service: DetectionService) -> None:
    """Upload the generated demo video and the bundled demo ONNX through the service, then start.

    Status says "demo" while these two are the stored uploads (server.demo.is_demo).
    """
    store = service.store
    with store.incoming_file(".mp4") as video:
        write_demo_video(video.name)
        service.add_video(Path(video.name), DEMO_VIDEO_NAME)
    with store.incoming_file(".onnx") as model, DEMO_ONNX.open("rb") as source:
        shutil.copyfileobj(source, model)
        model.flush()
        service.add_model(Path(model.name), DEMO_ONNX.name)
    service.start()
    logger.info("demo running: %s with %s", DEMO_VIDEO_NAME, DEMO_ONNX.name)
