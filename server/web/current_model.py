"""The model the stream runs: its engines (ONNX Runtime, NCNN) and the settings they run with."""

from __future__ import annotations

from server.models.int8.builds import Int8Models
from server.models.ncnn import NcnnBuild
from server.models.runtime import ModelRuntime
from server.vision.engines import AUTO, ONNXRUNTIME
from server.vision.settings import IMGSZ_CHOICES, Settings, apply_changes, options_for
from server.web.uploads import StoredModel, UploadStore


class CurrentModel:
    """Engines (fp32, int8 once tuned, NCNN) of the stored model and the validated settings; swapped, never edited."""

    def __init__(self, store: UploadStore, int8: Int8Models, engine: str = Settings.engine):
        self.store = store
        self.int8 = int8
        self.engine_at_start = engine
        self.settings = apply_changes(Settings(), {"engine": engine})  # SettingsError names a bad --engine
        self.runtime: ModelRuntime | None = None
        if store.model is not None:  # re-adopted from a previous run (see UploadStore)
            self.adopt(store.model)

    def current(self) -> Settings:
        """The settings now (the producer asks on every frame)."""
        return self.settings

    def imgsz_choices(self) -> tuple[int, ...]:
        model = self.store.model
        if model is not None and model.info.input_hw is not None:
            return (model.info.imgsz,)
        return IMGSZ_CHOICES

    def offered(self) -> tuple[dict | None, dict | None]:
        """The engines (and their precisions) the model offers, and why an engine is left out; None without a model."""
        return self.runtime.offered() if self.runtime is not None else (None, None)

    def options(self) -> dict:
        return options_for(self.imgsz_choices(), self.offered()[0])

    def described(self, model: dict | None) -> dict | None:
        """Add the engines the model offers to its description, and why NCNN is not among them if it is not."""
        if model is not None and self.runtime is not None:
            offered, why_not = self.runtime.offered()
            model.update(engines=offered, ncnn_unavailable=why_not.get("ncnn"))
        return model

    def active(self) -> dict:
        """What runs for the settings now: engine and precision (int8 only once tuned)."""
        if self.runtime is None:
            return {"engine": ONNXRUNTIME, "active": "fp32", "threads": self.settings.threads}
        key = self.runtime.key_for(self.settings)
        return {"engine": key.engine, "active": key.precision, "threads": key.threads}

    def adopt(self, model: StoredModel, ncnn: NcnnBuild | None = None) -> None:
        """Run model from now on, at the size it was trained or exported for when that is offered.

        ncnn is its NCNN build when the upload just wrote it; a re-adopted model's is checked when first asked for.
        """
        self.runtime = ModelRuntime(model.onnx_path, lambda: self.int8.ready(model.onnx_path), ncnn=ncnn,
                                    verdict=lambda: self.int8.verdict(model.onnx_path))
        choices = self.imgsz_choices()
        imgsz = model.info.imgsz if model.info.imgsz in choices else choices[-1]
        changes = {"imgsz": imgsz, "classes": None}
        offered, why_not = self.runtime.offered()
        if self.settings.engine != AUTO and self.settings.precision not in offered.get(self.settings.engine, ()):
            # the new model lacks the engine or precision in force
            changes.update(engine=self.engine_at_start, precision=Settings.precision)
        self.settings = apply_changes(self.settings, changes, choices, len(model.info.classes), offered, why_not)

    def update(self, changes: dict) -> Settings:
        """Validate and apply a change (SettingsError when invalid); return the settings it replaced."""
        model = self.store.model
        class_count = len(model.info.classes) if model else 0
        old = self.settings
        offered, why_not = self.offered()
        self.settings = apply_changes(old, changes, self.imgsz_choices(), class_count, offered, why_not)
        return old

    def forget(self) -> None:
        """No model any more; engine and precision go back to their defaults."""
        self.runtime = None
        self.settings = apply_changes(self.settings, {"engine": self.engine_at_start, "precision": Settings.precision})
