"""Planning fixtures: a local HTTP server replaying recorded Octopus / open-meteo JSON."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from tariff_server import tariff_api  # noqa: F401 (the tariff providers' replay fixture)

DATA = Path(__file__).parent / "data"
RECORDED_HOST = "https://api.octopus.energy"
AGILE = "/v1/products/AGILE-24-10-01/electricity-tariffs/E-1R-AGILE-24-10-01-C/standard-unit-rates/"
OUTGOING = (
    "/v1/products/AGILE-OUTGOING-19-05-13/electricity-tariffs/"
    "E-1R-AGILE-OUTGOING-19-05-13-C/standard-unit-rates/"
)


@dataclass
class Replay:
    """What the server answers. `fail_next` requests get 503; `down` answers every one 503."""

    base_url: str = ""
    fail_next: int = 0
    down: bool = False
    open_meteo_file: str = "open_meteo_gti_15min.json"
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, raw_path: str) -> tuple[int, bytes]:
        url = urlparse(raw_path)
        query = parse_qs(url.query)
        with self.lock:
            self.requests.append(raw_path)
            if self.down:
                return 503, b'{"detail": "down"}'
            if self.fail_next > 0:
                self.fail_next -= 1
                return 503, b'{"detail": "try later"}'
        if url.path == AGILE:
            name = (
                "octopus_agile_C_page2.json"
                if query.get("page") == ["2"]
                else ("octopus_agile_C_page1.json")
            )
        elif url.path == OUTGOING:
            name = "octopus_agile_outgoing_C.json"
        elif url.path == "/v1/forecast":
            name = self.open_meteo_file
        else:
            return 404, b'{"detail": "Not found."}'
        body = (DATA / name).read_text().replace(RECORDED_HOST, self.base_url)
        return 200, body.encode()


@pytest.fixture
def replay() -> Iterator[Replay]:
    state = Replay()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = state.answer(self.path)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def recorded(name: str) -> object:
    return json.loads((DATA / name).read_text())
