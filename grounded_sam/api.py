"""``GroundedSAM``: the public pipeline, its verbs for images, videos and datasets.

:class:`GroundedSAM` is the core :class:`~grounded_sam.pipeline.Pipeline` (``predict``,
``predict_batch``, ``spec``, ``fingerprint``) with the verbs that use the layers above it:
``track`` (:mod:`grounded_sam.tracking`) and ``label`` (:mod:`grounded_sam.labeling`). Those
layers work on any :class:`~grounded_sam.pipeline.Pipeline` and never import this module, so the
imports inside the product run one way: pipeline <- tracking <- labeling <- api <- app, CLI.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import supervision as sv

from grounded_sam.pipeline.core import Pipeline
from grounded_sam.tracking.factory import Tracker, make_tracker, tracker_kind

if TYPE_CHECKING:
    from grounded_sam.evaluation import EvalReport
    from grounded_sam.evaluation.tune import TuneResult
    from grounded_sam.labeling import LabelReport
    from grounded_sam.labeling.options import Format

__all__ = ["GroundedSAM", "GroundedSAM2"]


class GroundedSAM(Pipeline):
    """Text-prompted segmentation and tracking: captions -> detector boxes -> SAM masks.

    The constructor's arguments are :class:`~grounded_sam.pipeline.Pipeline`'s (ontology, detector,
    segmenter, device, thresholds, ...); ``predict`` / ``predict_batch`` segment images, ``track``
    follows the objects through a video, ``label`` turns a folder into a dataset.
    """

    # ------------------------------------------------------------------ datasets
    def label(
        self,
        input_folder: str | Path,
        extension: str | Sequence[str] | None = ".jpg",
        output_folder: str | Path | None = None,
        format: Format = "coco",  # noqa: A002 (the public name)
        *,
        backend: Literal["local", "ray"] = "local",
        ray_address: str | None = None,
        exemplars: Mapping[str, Any] | None = None,
        negative_exemplars: Mapping[str, Any] | None = None,
        image_exemplars: Mapping[str, Mapping[str, Any]] | None = None,
        videos: bool = False,
        tracker: Tracker = "auto",
        redetect_every: int | None = None,
        memory: str | None = None,
        **options: Any,
    ) -> LabelReport:
        """Label a folder of images into a dataset (resumable; see :mod:`grounded_sam.labeling`).

        ``options``: the other fields of :class:`~grounded_sam.labeling.LabelOptions`
        (``recursive``, ``batch_size``, ``progress``, ``overwrite``, ``copy_images``,
        ``polygons``, ``multipart``) and, for ``backend="ray"``, of
        :class:`~grounded_sam.labeling.RayOptions` (``num_workers``, ``num_gpus_per_worker``,
        ``num_cpus_per_worker``). ``output_folder`` defaults to ``<input_folder>_labeled``.

        ``backend="ray"``: ``num_workers`` Ray actors each rebuild this pipeline from :meth:`spec`
        (on CUDA when ``num_gpus_per_worker > 0``, else on CPU) and predict batches of
        ``batch_size`` images; the records and dataset files are the local backend's
        (:mod:`grounded_sam.labeling.ray_backend`). ``input_folder`` may then also be a pyarrow URI
        (``s3://...``; give ``output_folder``). ``ray_address``: used only when Ray is not
        initialised (``"auto"`` = the running cluster; the same as ``address`` of ``RayOptions``).

        Visual prompts (detectors that take them, ``sam3``): ``exemplars`` / ``negative_exemplars``
        (``{class: [[x1, y1, x2, y2], ...]}``, as in :meth:`predict`) for every image, and
        ``image_exemplars`` ``{relative path: {"exemplars": ..., "negative_exemplars": ...}}`` for
        single images (replacing the former there). They join the job's fingerprint: a rerun with
        other boxes is refused unless ``overwrite=True``. A box that does not fit its image fails
        that image alone.

        ``videos=True``: ``input_folder`` holds videos (``extension`` by default: every video type);
        each is tracked (``tracker``, ``redetect_every``, ``memory`` as in :meth:`track`) into its own video
        COCO file plus an ``index.json`` (:mod:`grounded_sam.labeling.videos`); with
        ``backend="ray"`` each video is one task on the cluster.
        """
        from grounded_sam.labeling import ImagePrompts, LabelOptions, RayOptions, label_folder, label_folder_ray
        from grounded_sam.labeling.options import split_options

        if backend not in ("local", "ray"):
            raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
        label_changes, ray_changes = split_options(options, LabelOptions, RayOptions)
        prompts = ImagePrompts.from_exemplars(exemplars, negative_exemplars, image_exemplars)
        if prompts is not None:
            self.check_exemplars_supported()  # before any image is read
        opts = LabelOptions(extension=extension, format=format, prompts=prompts, **label_changes)
        fingerprint = self.fingerprint() if prompts is None else {**self.fingerprint(), "prompts": prompts.to_json()}
        remote = isinstance(input_folder, str) and "://" in input_folder
        if output_folder is None:
            if remote:
                raise ValueError(f"give output_folder for the remote input {input_folder!r}")
            output_folder = Path(input_folder).with_name(Path(input_folder).name + "_labeled")
        if videos:
            from grounded_sam.labeling.videos import TrackOptions, label_videos, label_videos_ray

            track = TrackOptions(tracker, redetect_every, memory).resolved(self)
            opts = opts.update(extension=None if extension == ".jpg" else extension)
        elif memory is not None:
            raise ValueError("memory applies to video labeling (videos=True)")
        if backend == "ray":
            from grounded_sam.labeling import PipelineFactory

            cluster = RayOptions(**{"address": ray_address, **ray_changes})
            worker = PipelineFactory({**self.spec(), "compact": True,  # compact masks, as the local backend's
                                      "device": "cuda" if cluster.num_gpus_per_worker > 0 else "cpu"})
            if videos:
                return label_videos_ray(worker, input_folder, output_folder, self.classes, opts, cluster, track,
                                        fingerprint=fingerprint)
            return label_folder_ray(worker, input_folder, output_folder, self.classes, opts, cluster,
                                    fingerprint=fingerprint)
        if remote:
            raise ValueError(f"the local backend reads local folders; give a path, "
                             f"or backend='ray' for {input_folder!r}")
        if videos:
            return label_videos(self, input_folder, output_folder, opts, track, fingerprint=fingerprint)
        # compact masks (crop + RLE) for every image: a large image with many objects never holds
        # one full-frame mask per object; the files are the same as from dense masks
        return label_folder(partial(self.predict, compact=True), Path(input_folder), output_folder, self.classes,
                            opts, predict_batch_fn=partial(self.predict_batch, compact=True), fingerprint=fingerprint)

    # ------------------------------------------------------------------ label quality
    def evaluate(
        self,
        ground_truth: Any,
        predictions: Any = None,
        *,
        images: str | Path | None = None,
        batch_size: int = 1,
        **options: Any,
    ) -> EvalReport:
        """Score labels against ground truth (:func:`grounded_sam.evaluation.evaluate`, whose
        ``options`` it takes: ``class_map``, ``ground_truth_images_only``, ``iou_threshold``).

        ``predictions=None``: this pipeline predicts the ground truth's images, ``batch_size`` at
        a time, finding each by its file name under ``images`` (default: the folder of a COCO
        ground-truth file, or the ``label`` folder itself).
        """
        from grounded_sam.evaluation import evaluate
        from grounded_sam.evaluation.data import read_ground_truth
        from grounded_sam.evaluation.run import predict_ground_truth

        gt = read_ground_truth(ground_truth)
        root = None
        if predictions is None:
            predictions, root = predict_ground_truth(self, gt, ground_truth, images, batch_size)
        report = evaluate(gt, predictions, classes=self.classes, **options)
        report.images_root = root if root is not None else (Path(images) if images is not None else None)
        return report

    def tune(
        self,
        ground_truth: Any,
        *,
        images: str | Path | None = None,
        objective: str = "f1",
        floor: float = 0.05,
        iou_threshold: float = 0.5,
        class_map: Mapping[str, str] | None = None,
        batch_size: int = 1,
        candidates: str | Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    ) -> TuneResult:
        """Per-class score thresholds tuned on ground truth (:mod:`grounded_sam.evaluation.tune`).

        The models run once over the ground truth's images (found as for :meth:`evaluate`) keeping
        every candidate scoring ``>= floor``; each class's threshold is then swept offline for
        ``objective`` (``"f1"``, ``"cgf1"``, ``"precision>=0.9"``, ``"recall>=0.8"``).
        ``candidates`` (``{"car": ["automobile", "vehicle"]}`` or ``"car=automobile|vehicle"``):
        captions to try beside each class's own, all prompted in the same pass; each class gets
        the set of captions that scores best. ``class_map``: this pipeline's class name -> the
        ground truth's, where they differ. The result's ``ontology`` (saved by
        ``result.save("tuned.yaml")``) is this pipeline's with the tuned thresholds (and captions):
        ``GroundedSAM(result.ontology, ...)``, or ``--ontology tuned.yaml`` on the command line.
        """
        from grounded_sam.evaluation.data import read_ground_truth
        from grounded_sam.evaluation.tune import tune

        return tune(self, read_ground_truth(ground_truth), ground_truth, images, objective, floor, iou_threshold,
                    class_map, batch_size, candidates)

    # ------------------------------------------------------------------ video
    def track(
        self,
        video: Any,
        redetect_every: int | None = None,
        tracker: Tracker = "auto",
        memory: str | None = None,
        **kwargs: Any,
    ) -> Iterator[tuple[int, sv.Detections]]:
        """Track the ontology's objects through a video: ``(frame_index, sv.Detections)`` per frame.

        ``tracker``: ``"sam2"`` detects every ``redetect_every`` frames (default 15) and tracks with
        the segmenter's memory (:class:`grounded_sam.tracking.sam2.GroundedTracker`); ``"sam3"`` runs
        SAM 3's concept tracker with every caption in one session
        (:class:`grounded_sam.tracking.sam3.Sam3ConceptTracker`); ``"auto"`` is ``"sam3"`` for the
        ``sam3`` detector and ``"sam2"`` otherwise. ``memory`` (``"sam2"`` only): each track's memory
        policy, ``"fifo"`` (SAM 2's, the default), ``"quality"``, ``"samurai"`` or ``"distractor"``
        (:mod:`segmenter.video.policies`). ``kwargs`` go to the tracker.
        """
        if self.tiling is not None:
            raise ValueError("tiled detection (tile=...) works on images only for now; track with a pipeline "
                             "built without tile")
        if memory is not None:
            kwargs["memory"] = memory
        for t, _, det in self.make_tracker(tracker, redetect_every=redetect_every, **kwargs).frames(video):
            yield t, det

    def make_tracker(self, tracker: Tracker = "auto", redetect_every: int | None = None, **options: Any) -> Any:
        """The video tracker :meth:`track` runs (its ``frames(video)`` also yields each RGB frame);
        see :func:`grounded_sam.tracking.make_tracker`."""
        return make_tracker(self, tracker, redetect_every, **options)

    def tracker_kind(self, tracker: Tracker = "auto") -> str:
        """The tracker ``tracker`` stands for: ``"auto"`` is ``"sam3"`` for the ``sam3`` detector, else ``"sam2"``."""
        return tracker_kind(self, tracker)


GroundedSAM2 = GroundedSAM  # autodistill users change one import
