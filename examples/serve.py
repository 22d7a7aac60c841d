"""A minimal model server for a `blend export` artifact: torch and the standard library only.

    python examples/serve.py homefeed.pt2 --port 8080      # loopback by default

It never imports blendspec: the artifact carries the program and its input contract
(`blendspec.json`), and this file follows that contract. It serves either kind the contract names:
a torch.export program (`blend export`) or an AOTInductor package (`blend export --aot`), which it
loads with `torch._C._aoti.AOTIModelPackageLoader` after checking that this host can run it (the
platform, the torch release and the CPU features the package was compiled for). Endpoints:

* ``GET /contract`` — the artifact's metadata (inputs in order, dtypes, shapes, outputs, hash).
* ``POST /blend`` — a JSON request, or ``{"requests": [...]}`` to blend several in one batch::

    {"request_id": "r1",
     "user_state": [0.1, ...],                      # request-level `features` inputs, if any
     "candidates": [{"candidate_id": "a", "p_click": 0.12, "visual": [...], "sid": [3, 1, 4, 1],
                     "topic": "cats", "quality_risk": false, ...}, ...]}

  The answer holds, per request, the slate (candidate ids in slate order with their utility and
  selection score), the applied utility weights, and the per-request outputs (cap violations,
  early stop, the policy's action and propensity when the spec has one).

See docs/serving.md for the contract in prose.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import sys
import threading
import zipfile
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch

METADATA_FILE = "blendspec.json"
SEED_INPUT = "@request_seed"
AOTI_KIND = "aoti"
AOTI_MODEL = "model"
_DTYPES = {"float32": torch.float32, "int64": torch.int64, "bool": torch.bool}
MAX_BODY_BYTES = 64 * 1024 * 1024


class BadRequest(ValueError):
    """The JSON request does not follow the artifact's contract (answered with HTTP 400)."""


def request_seed(request_id: str) -> int:
    """The policy's per-request seed, exactly as the contract's `@request_seed` encoding says."""
    digest = hashlib.blake2b(str(request_id).encode(), digest_size=8, person=b"blendspec.seed")
    return int.from_bytes(digest.digest(), "little") >> 1


class Artifact:
    """The loaded program and its contract; `blend` turns JSON requests into JSON answers."""

    def __init__(self, path: str | Path) -> None:
        self.meta: dict[str, Any] = read_contract(path)
        self.kind = self.meta.get("kind", "exported")
        if self.kind == AOTI_KIND:
            check_host(self.meta)  # before its library is loaded: a missing ISA is a SIGILL
            # Not torch._inductor.aoti_load_package: that probes the CPU by compiling a test
            # program (and warns when the package's ISA is not the widest this CPU has).
            loader = torch._C._aoti.AOTIModelPackageLoader(str(path), AOTI_MODEL, False, 1, -1)
            self.program = lambda *inputs: loader.run(list(inputs))
        else:
            self.program = torch.export.load(str(path)).module()
        self.inputs: list[dict[str, Any]] = self.meta["inputs"]
        self.outputs: list[str] = self.meta["outputs"]
        self.multiple = int(self.meta["candidate_multiple"])
        self.lock = threading.Lock()  # one batch at a time: torch already uses every core

    def encode(self, requests: Sequence[dict[str, Any]]) -> list[torch.Tensor]:
        """The program's positional inputs for a batch of requests, padded to a multiple of 32."""
        sizes = [len(_candidates(r)) for r in requests]
        width = max(self.multiple, -(-max(sizes, default=0) // self.multiple) * self.multiple)
        tensors = []
        for spec in self.inputs:
            tensors.append(self._encode_input(spec, requests, width))
        return tensors

    def _encode_input(
        self, spec: dict[str, Any], requests: Sequence[dict[str, Any]], width: int
    ) -> torch.Tensor:
        name, kind = spec["name"], spec["kind"]
        batch = len(requests)
        dims = [batch if s == "B" else width if s == "N" else int(s) for s in spec["shape"]]
        out = torch.zeros(dims, dtype=_DTYPES[spec["dtype"]])
        for row, request in enumerate(requests):
            candidates = _candidates(request)
            if kind == "mask":
                out[row, : len(candidates)] = True
            elif kind == "seed":
                out[row] = request_seed(_request_id(request))
            elif kind == "features":
                out[row] = _vector(request.get(name), dims[1], name, _request_id(request))
            elif kind == "category":
                # Codes 0, 1, 2, ... by first appearance within the request, as `blend run`.
                codes: dict[Any, int] = {}
                labels = [_field(c, name, request) for c in candidates]
                for index, label in enumerate(labels):
                    out[row, index] = codes.setdefault(_label(label), len(codes))
            elif kind in ("embedding", "semantic_id"):
                if candidates:
                    values = [_field(c, name, request) for c in candidates]
                    for value in values:
                        if not isinstance(value, list) or len(value) != dims[2]:
                            raise BadRequest(
                                f"request `{_request_id(request)}`: `{name}` must be a list of "
                                f"{dims[2]} numbers"
                            )
                    out[row, : len(values)] = torch.tensor(values, dtype=out.dtype)
            elif kind == "flag":
                out[row, : len(candidates)] = torch.tensor(
                    [bool(_field(c, name, request)) for c in candidates], dtype=torch.bool
                )
            else:  # score
                values = [_number(_field(c, name, request), name, request) for c in candidates]
                out[row, : len(values)] = torch.tensor(values, dtype=torch.float32)
        return out

    def blend(self, requests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Blend a batch of JSON requests; the answers are in the same order."""
        if not requests:
            return []
        inputs = self.encode(requests)
        with self.lock, torch.no_grad():
            results = self.program(*inputs)
        out = dict(zip(self.outputs, results, strict=True))
        answers = []
        weights = self.meta["weights"]
        for row, request in enumerate(requests):
            candidates = _candidates(request)
            slate = []
            for position, index in enumerate(out["indices"][row].tolist()):
                if index < 0:
                    break
                slate.append(
                    {
                        "position": position,
                        "candidate_id": candidates[index].get("candidate_id"),
                        "utility": float(out["utility"][row, position]),
                        "score": float(out["scores"][row, position]),
                    }
                )
            answer: dict[str, Any] = {
                "request_id": _request_id(request),
                "slate": slate,
                "weights": dict(zip(weights, out["weights"][row].tolist(), strict=True)),
            }
            for name, value in out.items():
                if value.dim() == 1:  # per-request outputs: cap_violations, action, ...
                    answer[name] = value[row].item()
            answers.append(answer)
        return answers


def read_contract(path: str | Path) -> dict[str, Any]:
    """The artifact's `blendspec.json`, read from the archive without loading the program (both
    kinds keep it at `<archive>/extra/blendspec.json`)."""
    if not zipfile.is_zipfile(path):  # torch would log its own traceback before failing
        raise ValueError("not a .pt2 archive written by `blend export`")
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.endswith(f"/extra/{METADATA_FILE}"):
                return json.loads(archive.read(name))
    raise ValueError(f"no {METADATA_FILE} inside: not written by `blend export`")


def cpu_features() -> set[str] | None:
    """This CPU's flags as /proc/cpuinfo names them; None where there is no /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


_TORCH_CPU_PROBES = {
    "avx2": "_is_avx2_supported",
    "avx512f": "_is_avx512_supported",
    "avx512_vnni": "_is_vnni_supported",
    "amx_tile": "_is_amx_tile_supported",
}


def check_host(meta: dict[str, Any]) -> None:
    """Refuse (ValueError) an AOTInductor package this host cannot run: the contract's `target`
    names the platform and the CPU features it was compiled to use, `torch_version` the torch."""
    target = meta.get("target") or {}
    built = f"{target.get('system')}/{target.get('machine')}"
    here = f"{platform.system()}/{platform.machine()}"
    if built != here:
        raise ValueError(f"this AOTInductor package was compiled for {built}; this host is {here}")
    recorded = str(meta.get("torch_version", ""))
    if recorded.split("+")[0] != torch.__version__.split("+")[0]:
        raise ValueError(
            f"this AOTInductor package was compiled against torch {recorded}; this host runs "
            f"torch {torch.__version__}"
        )
    required = list(target.get("cpu_features", []))
    flags = cpu_features()
    if flags is not None:
        missing = [f for f in required if f not in flags]
    else:  # no /proc/cpuinfo: what torch's own CPU detection can answer for
        missing = [
            f
            for f in required
            if f in _TORCH_CPU_PROBES and not getattr(torch.cpu, _TORCH_CPU_PROBES[f])()
        ]
    if missing:
        raise ValueError(
            f"this AOTInductor package was compiled for the `{target.get('isa')}` instruction "
            f"set and this CPU lacks {', '.join(missing)} (it would crash on an illegal "
            "instruction); export it with `blend export --aot --isa avx2` for a portable build"
        )


def _candidates(request: dict[str, Any]) -> list[dict[str, Any]]:
    candidates = request.get("candidates")
    if not isinstance(candidates, list):
        raise BadRequest(f"request `{_request_id(request)}` has no `candidates` list")
    return candidates


def _request_id(request: dict[str, Any]) -> str:
    if not isinstance(request, dict) or "request_id" not in request:
        raise BadRequest("every request needs a `request_id`")
    return str(request["request_id"])


def _field(candidate: dict[str, Any], name: str, request: dict[str, Any]) -> Any:
    if not isinstance(candidate, dict) or name not in candidate:
        raise BadRequest(f"request `{_request_id(request)}`: a candidate has no `{name}`")
    return candidate[name]


def _label(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadRequest(f"a category must be a string or an integer, got {value!r}")
    return value


def _number(value: Any, name: str, request: dict[str, Any]) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"request `{_request_id(request)}`: `{name}` must be a finite number")
    return float(value)


def _vector(value: Any, size: int, name: str, request_id: str) -> torch.Tensor:
    if not isinstance(value, list) or len(value) != size:
        raise BadRequest(f"request `{request_id}`: `{name}` must be a list of {size} numbers")
    return torch.tensor(value, dtype=torch.float32)


def make_server(artifact: Artifact, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server for the artifact (port 0: any free port, see ``server.server_address``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/contract":
                self._send(200, artifact.meta)
            else:
                self._send(404, {"error": f"no such endpoint {self.path}"})

        def do_POST(self) -> None:
            if self.path != "/blend":
                self._send(404, {"error": f"no such endpoint {self.path}"})
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
                if length > MAX_BODY_BYTES:
                    raise BadRequest("request body too large")
                body = json.loads(self.rfile.read(length) or b"null")
                if isinstance(body, dict) and "requests" in body:
                    answers = artifact.blend(body["requests"])
                    self._send(200, {"answers": answers})
                else:
                    self._send(200, artifact.blend([body])[0])
            except (BadRequest, json.JSONDecodeError, TypeError) as error:
                self._send(400, {"error": str(error)})
            except Exception as error:  # the program failed: answer, never drop the connection
                self._send(500, {"error": f"{type(error).__name__}: {error}"})

        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: a real server would log through its own stack

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", help="a .pt2 file written by `blend export`")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    try:
        artifact = Artifact(args.artifact)
    except Exception as error:  # any reason the archive is unusable: say so, no traceback
        print(f"error: cannot load {args.artifact}: {error}", file=sys.stderr)
        return 1
    server = make_server(artifact, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"serving {artifact.meta['spec_name']} on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
