"""Label Studio's labeling config (its XML ``<View>``), read for the ML backend.

What the backend needs from it: the image object (``<Image name=... value="$image">``), the
controls that draw on it (``BrushLabels``, ``PolygonLabels``, ``RectangleLabels`` for
pre-annotation; ``KeyPointLabels`` / ``RectangleLabels`` as the smart tools' prompts; a control marked
``smartOnly="true"`` is a prompt only), and for
every ``<Label value=...>`` of a drawing control the caption the detector should look for: its
``hint`` or ``alias`` attribute, else the captions that the server's own ontology gives the class of
that name. A label with neither is an error that names the label and the fix.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["LabelConfig", "Control", "LabelConfigError", "parse_label_config", "DRAWING_TYPES"]

DRAWING_TYPES = {"brushlabels": "brushlabels", "polygonlabels": "polygonlabels", "rectanglelabels": "rectanglelabels"}
PROMPT_TYPES = ("keypointlabels", "rectanglelabels", "keypoint", "rectangle")


class LabelConfigError(ValueError):
    """The labeling config cannot be served; ``problems`` lists every reason, one line each."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class Control:
    """One labeling control: ``type`` is Label Studio's lower-case tag (``"brushlabels"``)."""

    name: str
    type: str
    to_name: str
    labels: tuple[str, ...]
    captions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # label -> captions
    smart_only: bool = False  # smartOnly="true": a smart tool's prompt, never pre-annotated


@dataclass(frozen=True)
class LabelConfig:
    """The parts of a labeling config the backend uses."""

    images: Mapping[str, str]  # <Image> name -> task data key (value="$image" -> "image")
    controls: tuple[Control, ...]

    def drawing(self) -> list[Control]:
        """Controls that pre-annotation fills (brush, polygon, rectangle), on an image."""
        return [c for c in self.controls if c.type in DRAWING_TYPES and c.to_name in self.images and not c.smart_only]

    def brush_for(self, to_name: str) -> Control | None:
        """The brush control on ``to_name`` (where smart-tool masks go), else ``None``."""
        return next((c for c in self.controls if c.type == "brushlabels" and c.to_name == to_name), None)

    def ontology(self) -> dict[str, str]:
        """``{caption: label}`` over every drawing control (a ``CaptionOntology`` mapping)."""
        out: dict[str, str] = {}
        for control in self.drawing():
            for label, captions in control.captions.items():
                for caption in captions:
                    out.setdefault(caption, label)
        return out


def parse_label_config(xml: str, class_captions: Mapping[str, Sequence[str]] | None = None) -> LabelConfig:
    """Read a labeling config. ``class_captions``: ``{class: [caption, ...]}`` from the server's
    ontology, used for labels without a ``hint``/``alias``. Raises :class:`LabelConfigError`
    listing every problem (bad XML, no image, no drawing control, labels with no caption)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise LabelConfigError([f"the labeling config is not valid XML: {e}"]) from None
    images = {el.get("name", ""): el.get("value", "").lstrip("$") for el in root.iter() if el.tag.lower() == "image"}
    controls: list[Control] = []
    problems: list[str] = []
    class_captions = class_captions or {}
    for el in root.iter():
        kind = el.tag.lower()
        if kind not in DRAWING_TYPES and kind not in PROMPT_TYPES:
            continue
        name, to_name = el.get("name", ""), el.get("toName", "")
        smart_only = el.get("smartOnly", "").lower() == "true"
        labels: list[str] = []
        captions: dict[str, tuple[str, ...]] = {}
        for lab in el:
            if lab.tag.lower() != "label" or not lab.get("value"):
                continue
            value = lab.get("value", "")
            labels.append(value)
            given = (lab.get("hint") or lab.get("alias") or "").strip()
            found = (given,) if given else tuple(class_captions.get(value, ()))
            if found:
                captions[value] = found
            elif kind in DRAWING_TYPES and to_name in images and not smart_only:
                problems.append(f'<{el.tag} name="{name}">: label "{value}" has no caption: give it '
                                f'hint="what to look for", or start the server with a --prompt naming the class "{value}"')
        controls.append(Control(name, kind, to_name, tuple(labels), captions, smart_only))
    config = LabelConfig(images, tuple(controls))
    if not images:
        problems.insert(0, "the labeling config has no <Image> to segment")
    elif not config.drawing():
        problems.insert(0, "the labeling config has no BrushLabels, PolygonLabels or RectangleLabels on an <Image>")
    if problems:
        raise LabelConfigError(problems)
    return config
