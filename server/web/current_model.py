"""The model the stream runs: its ONNX Runtime sessions and the settings they run with."""

from __future__ import annotations

from server.models.int8.builds import Int8Models
from server.models.runtime import ModelRuntime
from server.vision.settings import IMGSZ_CHOICES, Settings, apply_changes, options_for
from server.web.uploads import StoredModel, UploadStore


class CurrentModel:
    """Sessions (fp32, or int8 once tuned) of the stored model and the validated settings; swapped, never edited."""

    def __init__(self, store: UploadStore, int8: Int8Models):
        self.store = store
        self.int8 = int8
        self.settings = Settings()
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

    def options(self) -> dict:
        return options_for(self.imgsz_choices())

    def adopt(self, model: StoredModel) -> None:
        """Run model from now on, at the size it was trained or exported for when that is offered."""
        self.runtime = ModelRuntime(model.onnx_path, lambda: self.int8.ready(model.onnx_path))
        choices = self.imgsz_choices()
        imgsz = model.info.imgsz if model.info.imgsz in choices else choices[-1]
        self.settings = apply_changes(self.settings, {"imgsz": imgsz, "classes": None}, choices, len(model.info.classes))

    def update(self, changes: dict) -> Settings:
        """Validate and apply a change (SettingsError when invalid); return the settings it replaced."""
        model = self.store.model
        class_count = len(model.info.classes) if model else 0
        old = self.settings
        self.settings = apply_changes(old, changes, self.imgsz_choices(), class_count)
        return old

    def forget(self) -> None:
        """No model any more; precision goes back to fp32."""
        self.runtime = None
        self.settings = apply_changes(self.settings, {"precision": Settings.precision})
