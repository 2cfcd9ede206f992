"""The label-studio-sdk side of tests/test_label_studio_real.py. It runs under the python of Label
Studio's own venv (tests/install_label_studio.sh), never in ours, and is not a test module:

    <label-studio-venv>/bin/python tests/label_studio_sdk_calls.py STEP < request.json > answer.json

Every request carries ``url`` and ``token`` (the server and the user's API token). Brush masks
are decoded with the SDK's own ``label_studio_sdk.converter.brush.decode_rle`` and written to the
``.npz`` file the request names (``out``); in the JSON answer a brush result's ``rle`` is replaced
by ``mask``, the array's key in that file.

Steps:
- ``project``: create a project (``title``, ``label_config``), upload the ``images`` (files, so
  Label Studio serves them at ``/data/upload/...``), connect the ML backend (``backend_url``,
  basic auth with ``backend_token`` as the password; interactive), run the data manager's
  "Retrieve predictions" on every task, read the predictions back.
- ``interactive``: send a smart tool's ``context`` for ``task`` to the project's ML backend
  (``backend``), the call Label Studio's editor makes, and answer its result.
- ``encode``: the SDK's ``mask2rle`` of each mask in the ``.npz`` file ``masks`` (no server).
- ``personal_token``: a new personal access token of the user (a JWT refresh token).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
from label_studio_sdk import Client, LabelStudio
from label_studio_sdk.converter.brush import decode_rle, mask2rle


def project(request: dict[str, Any], masks: dict[str, np.ndarray]) -> dict[str, Any]:
    ls = LabelStudio(base_url=request["url"], api_key=request["token"])
    created = ls.projects.create(title=request["title"], label_config=request["label_config"])
    uploads = Client(url=request["url"], api_key=request["token"]).get_project(created.id)
    task_ids: list[int] = []
    for path in request["images"]:  # one file per import: a task whose image is /data/upload/<project>/<name>
        task_ids += uploads.import_tasks(path)
    tasks = [{"id": t, "data": ls.tasks.get(t).data} for t in task_ids]
    backend = ls.ml.create(project=created.id, url=request["backend_url"], title="grounded-sam",
                           is_interactive=True, auth_method="BASIC_AUTH", basic_auth_user="label-studio",
                           basic_auth_pass=request["backend_token"])
    ls.actions.create(id="retrieve_tasks_predictions", project=created.id,
                      selected_items={"all": True, "excluded": []})
    predictions = []
    for p in ls.predictions.list(project=created.id):
        results = [_decoded(r, f"p{p.id}_{i}", masks) for i, r in enumerate(p.result)]
        predictions.append({"id": p.id, "task": p.task, "score": p.score, "model_version": p.model_version,
                            "result": results})
    backend = ls.ml.get(backend.id)
    return {"project": created.id, "tasks": tasks, "predictions": predictions,
            "backend": {"id": backend.id, "state": backend.state, "error": backend.error_message,
                        "model_version": backend.model_version}}


def interactive(request: dict[str, Any], masks: dict[str, np.ndarray]) -> dict[str, Any]:
    client = Client(url=request["url"], api_key=request["token"])
    response = client.make_request("POST", f"/api/ml/{request['backend']}/interactive-annotating",
                                   json={"task": request["task"], "context": request["context"]})
    answer = response.json()
    data = answer.get("data") or {}
    data["result"] = [_decoded(r, f"i{n}", masks) for n, r in enumerate(data.get("result") or [])]
    return answer


def encode(request: dict[str, Any], masks: dict[str, np.ndarray]) -> dict[str, Any]:
    with np.load(request["masks"]) as given:
        return {key: [int(b) for b in mask2rle(given[key].astype(np.uint8) * 255)] for key in given.files}


def personal_token(request: dict[str, Any], masks: dict[str, np.ndarray]) -> dict[str, Any]:
    ls = LabelStudio(base_url=request["url"], api_key=request["token"])
    return {"token": ls.tokens.create().token}


def _decoded(result: dict[str, Any], key: str, masks: dict[str, np.ndarray]) -> dict[str, Any]:
    value = result.get("value") or {}
    if result.get("type") != "brushlabels" or "rle" not in value:
        return result
    h, w = result["original_height"], result["original_width"]
    masks[key] = np.reshape(decode_rle(value["rle"]), (h, w, 4))[:, :, 3]
    return {**result, "value": {k: v for k, v in value.items() if k != "rle"} | {"mask": key}}


def main() -> None:
    step = {"project": project, "interactive": interactive, "encode": encode, "personal_token": personal_token}[sys.argv[1]]
    request = json.load(sys.stdin)
    masks: dict[str, np.ndarray] = {}
    answer = step(request, masks)
    if "out" in request:
        np.savez_compressed(request["out"], **masks)
    json.dump(answer, sys.stdout, default=str)


if __name__ == "__main__":
    main()
