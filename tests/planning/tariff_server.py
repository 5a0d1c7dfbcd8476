"""A local HTTP server replaying recorded tariff-provider replies (tests/planning/data/
tariffs/): Octopus products, ENTSO-E A44, Nord Pool, Tibber GraphQL, GB Carbon Intensity.
Tests point each provider's `base_url` at it and can swap any path's answer for a failure."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

DATA = Path(__file__).parent / "data" / "tariffs"
ENTSOE_TOKEN = "5e3c7a1f-entsoe-test-token"
TIBBER_TOKEN = "tibber-test-token-3f9a"


def octopus_path(product: str, tariff: str) -> str:
    return f"/v1/products/{product}/electricity-tariffs/{tariff}/standard-unit-rates/"


ROUTES = {
    octopus_path("GO-VAR-22-10-14", "E-1R-GO-VAR-22-10-14-C"): "octopus_go_C.json",
    octopus_path(
        "INTELLI-VAR-22-10-14", "E-1R-INTELLI-VAR-22-10-14-C"
    ): "octopus_intelligent_go_C.json",
    octopus_path("COSY-22-12-08", "E-1R-COSY-22-12-08-C"): "octopus_cosy_C.json",
    octopus_path(
        "FLUX-IMPORT-23-02-14", "E-1R-FLUX-IMPORT-23-02-14-C"
    ): "octopus_flux_import_C.json",
    octopus_path(
        "FLUX-EXPORT-23-02-14", "E-1R-FLUX-EXPORT-23-02-14-C"
    ): "octopus_flux_export_C.json",
    octopus_path("SILVER-24-12-31", "E-1R-SILVER-24-12-31-C"): "octopus_tracker_C.json",
    "/api": "entsoe_a44_NL.xml",
    "/v1-beta/gql": "tibber_price_info.json",
    "/regional/intensity/2026-11-27T16:00Z/fw48h/regionid/13": "carbon_regional_fw48h_13.json",
}


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class TariffApi:
    base_url: str = ""
    down: bool = False
    # path -> (status, body): answered instead of the recording (a malformed or odd reply).
    overrides: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, path: str) -> int:
        with self.lock:
            return sum(r.path == path for r in self.requests)

    def answer(self, seen: Seen) -> tuple[int, bytes, str]:
        with self.lock:
            self.requests.append(seen)
            if self.down:
                return 503, b'{"detail": "down"}', "application/json"
            if seen.path in self.overrides:
                status, body = self.overrides[seen.path]
                return status, body, "application/json"
        if seen.path == "/api/DayAheadPrices":  # Nord Pool: one delivery day per request
            if seen.query.get("date") != ["2026-11-27"]:
                return 204, b"", "application/json"
            return 200, (DATA / "nordpool_SE3_SEK_2026-11-27.json").read_bytes(), "application/json"
        name = ROUTES.get(seen.path)
        if name is None:
            return 404, b'{"detail": "Not found."}', "application/json"
        if seen.path == "/api" and seen.query.get("securityToken") != [ENTSOE_TOKEN]:
            return 401, b"<html><body>Unauthorized</body></html>", "text/html"
        if seen.path == "/v1-beta/gql":
            if seen.method != "POST" or seen.headers.get("authorization") != (
                f"Bearer {TIBBER_TOKEN}"
            ):
                return 400, b'{"errors": [{"message": "invalid token"}]}', "application/json"
        kind = "text/xml" if name.endswith(".xml") else "application/json"
        return 200, (DATA / name).read_bytes(), kind


@pytest.fixture
def tariff_api() -> Iterator[TariffApi]:
    state = TariffApi()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            seen = Seen(
                method,
                url.path,
                parse_qs(url.query),
                {k.lower(): v for k, v in self.headers.items()},
                body,
            )
            status, out, kind = state.answer(seen)
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

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
