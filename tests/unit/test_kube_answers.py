"""What the API server (or whatever answers in its place) sends back must be an answer: a
success without a JSON object — a body cut short, a proxy's page, nothing — is an error,
never an empty list of HPAs (the operator would scale a workload an HPA scales) or a Scale
of 0 replicas without a resourceVersion (an unconditional write). A tiny HTTP server on
127.0.0.1 plays the API server."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from forescale.controller.kube import KubeClient, KubeError, ScaleResource
from tests.support.kubeconfig import write_kubeconfig

#: path → status, body, whether a Content-Length is sent (without one, the connection's
#: close ends the body, so a body cut short is not noticed by the transport).
Answer = Callable[[str], tuple[int, bytes, bool]]

HPA_DISCOVERY = json.dumps({"groupVersion": "autoscaling/v2", "resources": [
    {"name": "horizontalpodautoscalers", "namespaced": True,
     "kind": "HorizontalPodAutoscaler"}]}).encode()
HPA_LIST = json.dumps({"kind": "HorizontalPodAutoscalerList", "items": [
    {"metadata": {"name": "web"}, "spec": {"scaleTargetRef": {
        "kind": "Deployment", "name": "web", "apiVersion": "apps/v1"}}}]}).encode()


class ApiServer:
    def __init__(self, answer: Answer) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def _serve(self) -> None:
                status, body, with_length = answer(self.path.split("?")[0])
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if with_length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PATCH = do_PUT = do_DELETE = _serve  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Callable[[Answer], KubeClient]]:
    made: list[tuple[ApiServer, KubeClient]] = []

    def start(answer: Answer) -> KubeClient:
        server = ApiServer(answer)
        config = write_kubeconfig(tmp_path / f"kubeconfig{len(made)}", server=server.url,
                                  identity="op")
        made.append((server, KubeClient(kubeconfig=str(config))))
        return made[-1][1]

    yield start
    for server, kube in made:
        kube.close()
        server.close()


def _hpas(listing: bytes, with_length: bool) -> Answer:
    def answer(path: str) -> tuple[int, bytes, bool]:
        if path == "/apis/autoscaling/v2":
            return 200, HPA_DISCOVERY, True
        return 200, listing, with_length
    return answer


def test_a_whole_hpa_list_is_read(client: Callable[[Answer], KubeClient]) -> None:
    hpas = client(_hpas(HPA_LIST, True)).list_hpas("shop")
    assert [h["metadata"]["name"] for h in hpas] == ["web"]


@pytest.mark.parametrize("body", [HPA_LIST[: len(HPA_LIST) // 2], b"", b"[]", b"null"])
def test_an_hpa_list_cut_short_or_not_an_object_is_an_error(
        client: Callable[[Answer], KubeClient], body: bytes) -> None:
    with pytest.raises(KubeError, match="without a JSON object") as info:
        client(_hpas(body, False)).list_hpas("shop")
    assert info.value.reason == "InvalidResponse"


@pytest.mark.parametrize("body", [b"<html>Please log in</html>", b"[" * 100_000])
def test_a_scale_that_is_not_json_is_an_error(
        client: Callable[[Answer], KubeClient], body: bytes) -> None:
    kube = client(lambda path: (200, body, True))
    with pytest.raises(KubeError, match="without a JSON object"):
        kube.get_scale(ScaleResource("apps", "v1", "deployments"), "shop", "web")


def test_an_error_that_is_not_json_keeps_its_status(
        client: Callable[[Answer], KubeClient]) -> None:
    kube = client(lambda path: (503, b"<html>upstream down</html>", True))
    with pytest.raises(KubeError) as info:
        kube.get_scale(ScaleResource("apps", "v1", "deployments"), "shop", "web")
    assert info.value.status == 503 and "upstream down" in str(info.value)


def test_kopf_gets_the_token_as_it_is_now(tmp_path: Path) -> None:
    """In a cluster the projected token rotates and the client's refresh hook reads it
    again; kopf's login read api_key as it was."""
    config = write_kubeconfig(tmp_path / "kubeconfig", server="http://127.0.0.1:1",
                              identity="op")
    kube = KubeClient(kubeconfig=str(config))
    try:
        def rotate(cfg: object) -> None:
            kube.configuration.api_key = {"authorization": "Bearer rotated"}

        kube.configuration.refresh_api_key_hook = rotate
        assert kube.connection_params()["token"] == "rotated"
    finally:
        kube.close()

