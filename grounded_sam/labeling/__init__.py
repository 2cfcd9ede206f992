"""Resumable dataset labeling: a folder of images -> COCO / YOLO-seg / JSONL dataset.

How a job runs (:func:`label_folder`; :func:`label_folder_ray` spreads step 2 over Ray actors):

1. The input images are listed (:mod:`~grounded_sam.labeling.sources`: sorted by relative path;
   the output folder is left out when it lies inside the input folder).
2. The images without a valid record are taken in consecutive chunks of ``batch_size``; each
   chunk is loaded, predicted (:func:`~grounded_sam.labeling.job.predict_chunk`) and, as soon as
   it is done, each image is written as a **record** to
   ``output/.grounded_sam/records/<xx>/<sha256 of the relative path>.json``
   (:mod:`~grounded_sam.labeling.store`), masks as compressed RLE. A rerun skips valid records,
   so a killed job resumes where it stopped.
3. Bad inputs (corrupt, zero-byte, unsupported, a predictor error on that image, detections
   that do not fit the image) are reported in :attr:`LabelReport.failed` (path -> reason) and
   skipped; they are retried on the next run. ``KeyboardInterrupt`` stops the job (finished
   records stay).
4. The dataset is then assembled from the records only (:mod:`~grounded_sam.labeling.assemble`),
   in sorted order with ids counted from 1, so a killed-and-resumed job writes byte-identical
   files to an uninterrupted one:

   - ``format="coco"``: ``annotations.json`` (:class:`~grounded_sam.export.CocoWriter`);
   - ``format="yolo"``: ``labels/<relative path>.txt`` (one line per instance, an empty file for
     an image without detections) and ``data.yaml`` (:class:`~grounded_sam.export.YoloWriter`);
   - ``format="jsonl"``: ``annotations.jsonl``, one record a line (:class:`~grounded_sam.export.JsonlWriter`);
   - ``copy_images``: ``"copy"`` (default), ``"hardlink"`` (falls back to copying across
     devices), ``"symlink"`` (absolute links to the sources) or ``"none"`` puts the source
     files (original bytes) under ``images/<relative path>``. COCO ``file_name`` and JSONL
     ``file_name`` are relative to the output folder (``images/...``); with ``"none"`` they
     are relative to the input folder, which the COCO ``info.image_root`` names. YOLO label
     names that would collide (``a.jpg`` and ``a.png`` -> ``labels/a.txt``) fail the later image.

What to label and write is one :class:`LabelOptions`; where a Ray pool runs, one :class:`RayOptions`.
The phases (:mod:`~grounded_sam.labeling.job`) are shared by both backends, so both make the same
records and the same files. Memory holds the list of paths and one batch of images, nothing per
finished image. The job's fingerprint (classes, every setting of the predictor that can change a
label with the weights by content, the input folder; see ``GroundedSAM.fingerprint``) is kept in
``output/.grounded_sam/manifest.json``; a rerun with a different one raises
:class:`LabelingConfigError`, naming each differing setting with its old and new value, before
any file is touched, unless ``overwrite=True``: that drops the old records and labels everything
again, except the images reviewed in the app (kept unless ``discard_reviewed=True``). One job per
output folder at a time. Output paths never leave
``output_folder`` (:func:`~grounded_sam.export.safe_io.safe_output_path`).
"""

from grounded_sam.labeling.job import LabelReport
from grounded_sam.labeling.local import label_folder
from grounded_sam.labeling.options import ImagePrompts, LabelOptions, RayOptions
from grounded_sam.labeling.ray_backend import PipelineFactory, label_folder_ray
from grounded_sam.labeling.sources import list_remote_images
from grounded_sam.labeling.store import STORE_DIR, LabelingConfigError

__all__ = [
    "label_folder",
    "label_folder_ray",
    "LabelOptions",
    "ImagePrompts",
    "RayOptions",
    "LabelReport",
    "LabelingConfigError",
    "PipelineFactory",
    "list_remote_images",
    "STORE_DIR",
]
