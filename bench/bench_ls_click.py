"""(t) Label Studio smart-tool click through the ML backend over HTTP, on a cached embedding.

What Label Studio's editor costs an annotator per keypoint click: ``POST /predict`` with the click
as ``context`` to ``grounded-sam serve label-studio``'s app under a real uvicorn on 127.0.0.1
(JSON in, SAM's mask back as a brush RLE), the image embedding of the task already cached. The
task's image lies on a loopback HTTP server standing in for Label Studio (``/data/upload/...``),
so the first click pays the download and the image encoder; every later click, on this task or on
another task still in the backend's cache, pays the prompt encoder, the mask decoder, upscaling
to the image and the RLE only. Reported: the first click, the median / p90 of the clicks after it,
and the same click called in-process (``LabelStudioBackend.predict``, no HTTP) for comparison.
SAM 2.1 Hiera-T built from its config with random weights (no download), CPU by default.

    python bench/bench_ls_click.py --size 1024 --clicks 30
"""

from __future__ import annotations

import functools
import http.server
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import common

CONFIG = ('<View><Image name="image" value="$image"/><BrushLabels name="tag" toName="image">'
          '<Label value="Thing" hint="a thing"/></BrushLabels><KeyPointLabels name="kp" toName="image" smart="true">'
          '<Label value="Thing"/></KeyPointLabels></View>')


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _serve_folder(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _click(x: float, y: float, w: int, h: int) -> dict:
    return {"type": "keypointlabels", "from_name": "kp", "to_name": "image", "original_width": w,
            "original_height": h, "is_positive": True,
            "value": {"x": x * 100 / w, "y": y * 100 / h, "width": 0.5, "keypointlabels": ["Thing"]}}


def _click_once(client, names: list[str], size: int, rng: np.random.Generator, device: torch.device,
                task: int) -> tuple[float, dict, int]:
    """One keypoint click at a random place on task ``task`` over HTTP: seconds, the payload, answer bytes."""
    x, y = rng.uniform(0, size, 2)
    payload = {"project": "1.1", "label_config": CONFIG, "tasks": [{"id": task, "data": {"image": names[task]}}],
               "params": {"context": {"result": [_click(x, y, size, size)]}}}
    common.sync(device)
    t0 = time.perf_counter()
    answer = client.post("/predict", json=payload)
    elapsed = time.perf_counter() - t0
    answer.raise_for_status()
    result = answer.json()["results"][0]
    assert "error" not in result and result["result"][0]["type"] == "brushlabels", result
    return elapsed, payload, len(answer.content)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], size=1024)
    p.add_argument("--clicks", type=int, default=30, help="timed clicks after the first (median, p90 reported)")
    p.add_argument("--model", default="sam2.1_hiera_tiny")
    args = p.parse_args()
    if args.quick:
        args.size, args.clicks = [256], 5
    device = common.setup(args)
    import httpx
    import uvicorn
    from tiny import save_tiny_owlv2

    from grounded_sam import GroundedSAM
    from grounded_sam.serve import BackendOptions, LabelStudioBackend, build_server
    from segmenter import build_sam

    scratch = tempfile.TemporaryDirectory()  # removed at exit: checkpoints, images
    tmp = Path(scratch.name)
    owl = save_tiny_owlv2(tmp / "owl")  # the detector is not used by clicks; the pipeline needs one
    (tmp / "data" / "upload" / "1").mkdir(parents=True)
    host, host_url = _serve_folder(tmp)
    rows = []
    for size in args.size:
        ckpt = tmp / f"{args.model}_{size}.pt"
        torch.save({"model": build_sam(args.model, device="cpu", image_size=size).state_dict()}, ckpt)
        gs = GroundedSAM({"a thing": "Thing"}, detector=str(owl), segmenter=args.model, checkpoint=str(ckpt),
                         image_size=size, device=str(device))
        names = []
        for i in range(2):  # two tasks, so that clicks can alternate between them
            names.append(f"/data/upload/1/task{size}_{i}.png")
            Image.fromarray(common.mosaic(size, size, seed=i)).save(tmp / names[-1].lstrip("/"))
        backend = LabelStudioBackend(gs, BackendOptions(model_version="bench", pipeline_captions=False))
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(build_server(backend, token="t"), host="127.0.0.1", port=port,
                                               log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer t"},
                              timeout=600)
        assert client.post("/setup", json={"project": "1.1", "schema": CONFIG, "hostname": host_url,
                                           "access_token": "ls-token"}).status_code == 200
        rng = np.random.default_rng(0)
        click = functools.partial(_click_once, client, names, size, rng, device)
        first, _, _ = click(0)  # download + encoder + decoder
        first_other, _, _ = click(1)  # the second task's first click: its own embedding
        for _ in range(args.warmup):
            click(0)
        http_ms, local_ms, sizes = [], [], []
        for i in range(args.clicks):
            elapsed, payload, size_b = click(i % 2)  # alternating tasks: both embeddings stay cached
            http_ms.append(1000 * elapsed)
            sizes.append(size_b / 1024)
            t0 = time.perf_counter()
            backend.predict(payload)
            local_ms.append(1000 * (time.perf_counter() - t0))
        server.should_exit = True
        thread.join(timeout=30)
        client.close()
        med, p90 = float(np.median(http_ms)), float(np.percentile(http_ms, 90))
        rows.append([args.model, size, str(device), 1000 * first, 1000 * first_other, med, p90, max(http_ms),
                     float(np.median(local_ms)), float(np.median(sizes)), "yes" if med <= 200 else "NO"])
    host.shutdown()
    host.server_close()
    common.report(
        "(t) Label Studio smart-tool click through the ML backend over HTTP (bench/bench_ls_click.py)",
        ["model", "size", "device", "first click ms (task 1)", "first click ms (task 2)", "click ms (median)",
         "click ms (p90)", "click ms (max)", "in-process ms (median)", "answer KB (median)", "median <= 200 ms"],
        rows, args,
        notes=[f"{args.clicks} keypoint clicks after each task's first, alternating between 2 tasks (both "
               "embeddings cached), {0}x{0} mosaic PNGs fetched from a loopback HTTP server standing in for "
               "Label Studio; a click = POST /predict over HTTP to uvicorn on 127.0.0.1 (prompt encoder + mask "
               "decoder + upscaling + brush RLE + JSON); random weights".format(args.size[0])],
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
