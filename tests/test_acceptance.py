"""A model is read once on its way in (server.models.acceptance), through real uploads of real files.

The inert reader's unpickling and onnx.load are wrapped with counters in this process (the trial run's child
parses the file with ONNX Runtime, on purpose, and is counted apart): a .pt is unpickled once and its ONNX
conversion never parsed back, an .onnx is parsed once, and each is still trial-run once in the capped child.
"""

from __future__ import annotations

import collections
import os

import onnx
import pytest

from harness.client import upload
from server import create_app
from server.files import sha256_of
from server.models import acceptance, checkpoint
from tests.support.converter_models import real_checkpoints  # noqa: F401 (a fixture)

RAILWAY = "railway-obstacles-yolov8.pt"  # trained by others (tests/data/README.md)


@pytest.fixture
def reads(monkeypatch) -> collections.Counter:
    """Count unpicklings by the inert reader, onnx.load calls and trial runs from here on."""
    counts: collections.Counter = collections.Counter()

    def counted(key, function):
        def call(*args, **kwargs):
            counts[key] += 1
            return function(*args, **kwargs)

        return call

    monkeypatch.setattr(checkpoint.InertUnpickler, "load", counted("unpickle", checkpoint.InertUnpickler.load))
    load = counted("onnx.load", onnx.load_model)  # onnx.load is onnx.load_model under another name
    monkeypatch.setattr(onnx, "load", load)
    monkeypatch.setattr(onnx, "load_model", load)
    monkeypatch.setattr(acceptance, "trial_run", counted("trial run", acceptance.trial_run))
    return counts


def test_a_pt_upload_is_unpickled_once_and_its_conversion_never_parsed_back(client, config, real_checkpoints, reads):
    pt = real_checkpoints[RAILWAY]
    response = upload(client, "/upload/model", pt)
    assert response.status_code == 201, response.get_json()
    assert reads == {"unpickle": 1, "trial run": 1}  # the graph built is checked and translated to NCNN as it is
    engine_onnx = config.uploads / "cache" / f"{sha256_of(pt)}.onnx"
    assert engine_onnx.is_file() and response.get_json()["model"]["engines"]["ncnn"]
    assert sorted(p.name for p in engine_onnx.parent.glob(f"{engine_onnx.stem}.ncnn.*")) == [
        f"{engine_onnx.stem}.ncnn.{ext}" for ext in ("bin", "json", "param")
    ]

    reads.clear()
    again = upload(client, "/upload/model", pt)  # the same weights: the conversion comes from the cache
    assert again.status_code == 201 and again.get_json()["model"] == response.get_json()["model"]
    assert reads == {"unpickle": 1, "onnx.load": 1, "trial run": 1}  # still checked; the cached ONNX parsed once


def test_an_onnx_upload_is_parsed_once_and_run_from_a_link_in_the_cache(client, config, demo_onnx, reads):
    response = upload(client, "/upload/model", demo_onnx)
    assert response.status_code == 201, response.get_json()
    assert reads == {"onnx.load": 1, "trial run": 1}
    stored = config.uploads / "model" / demo_onnx.name
    engine_onnx = config.uploads / "cache" / f"{sha256_of(demo_onnx)}.onnx"
    assert os.path.samestat(stored.stat(), engine_onnx.stat())  # one file, two names: no copy
    assert response.get_json()["model"]["engines"]["ncnn"] and engine_onnx.with_suffix(".ncnn.json").is_file()

    reads.clear()
    restarted = create_app(config)  # start-up re-adopts the stored model with the same checks, parsing it once
    try:
        assert restarted.extensions["detection"].store.model.onnx_path == engine_onnx
        assert reads == {"onnx.load": 1, "trial run": 1}
    finally:
        restarted.extensions["detection"].stop()


def test_a_refused_onnx_leaves_nothing_in_the_cache(client, config, tmp_path, demo_onnx):
    model = onnx.load(str(demo_onnx))
    del model.metadata_props[:]  # not an Ultralytics export any more
    stripped = tmp_path / "plain.onnx"
    onnx.save(model, str(stripped))
    response = upload(client, "/upload/model", stripped)
    assert response.status_code == 400 and "no Ultralytics metadata" in response.get_json()["error"]
    assert not (config.uploads / "cache").exists() or list((config.uploads / "cache").iterdir()) == []
