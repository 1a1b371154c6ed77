"""The outbound URL guard (whisperop.core.urlguard): every notation of an internal
address named in issue 16, DNS results checked address by address, and the
httpx clients that check again at connect time (a real loopback server)."""

from __future__ import annotations

import asyncio
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import httpx
import pytest

from whisperop.core.errors import UnsafeURLError
from whisperop.core.urlguard import (
    AllowList,
    aresolve_url,
    check_url,
    guarded_async_client,
    guarded_client,
    redact,
    resolve_url,
)

# every address the issue found accepted, in the notation it was written in
INTERNAL = [
    "http://127.0.0.1/hook",
    "http://localhost/hook",
    "http://LOCALHOST./hook",
    "http://api.localhost/hook",
    "http://[::1]/hook",
    "http://0x7f000001/hook",
    "http://2130706433/hook",
    "http://127.1/hook",
    "http://0177.0.0.1/hook",
    "http://0x7f.0.0.1/hook",
    "http://127.0.0.1./hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:7f00:1]/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1%25eth0]/hook",
    "http://10.0.0.1:6443/api",
    "http://127.0.0.1:2379/v3/kv/range",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://0.0.0.0/",
    "http://0/",
    "http://[::]/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://[2002:7f00:1::]/",  # 6to4 around 127.0.0.1
    "http://[64:ff9b::a00:1]/",  # NAT64 around 10.0.0.1
    "http://[::7f00:1]/",  # IPv4-compatible (deprecated) form
    "http://255.255.255.255/",
]

MALFORMED = {
    "ftp://example.com/x": "http(s)",
    "file:///etc/passwd": "http(s)",
    "http:///nohost": "with a host",
    "http://user:pass@example.com/": "credentials",
    "http://user@example.com/": "credentials",
    "http://example.com:99999/": "not a valid URL",
    "http://example.com:0/": "port 0",
    "http://exa mple.com/": "whitespace",
    "http://example.com/\r\nX-Evil: 1": "control",
    "http://999.1.1.1/": "not a valid address",
}


@pytest.mark.parametrize("url", INTERNAL)
def test_internal_addresses_refused_in_every_notation(url: str) -> None:
    with pytest.raises(UnsafeURLError) as exc:
        resolve_url(url, what="webhook_url")
    assert "webhook_url" in str(exc.value)


@pytest.mark.parametrize("url,why", MALFORMED.items())
def test_malformed_urls_refused(url: str, why: str) -> None:
    with pytest.raises(UnsafeURLError, match=re.escape(why)):
        check_url(url)


def test_public_literals_pass_without_dns() -> None:
    for url in ("http://93.184.215.14/x", "https://[2606:4700:4700::1111]:8443/x?y=1", "http://0x5db8d70e/"):
        t = resolve_url(url)
        assert t.addresses and all(ip.is_global for ip in t.addresses), t


def test_names_are_resolved_and_every_address_checked() -> None:
    # "localhost" comes from /etc/hosts: the name check is only the first line of defence
    with pytest.raises(UnsafeURLError, match="loopback"):
        resolve_url("http://localhost:1/")
    with pytest.raises(UnsafeURLError, match="does not resolve"):
        resolve_url("http://no-such-host.invalid/")


def test_async_resolution_matches_sync() -> None:
    with pytest.raises(UnsafeURLError):
        asyncio.run(aresolve_url("http://2130706433/"))
    t = asyncio.run(aresolve_url("http://localhost:8/", allow="localhost"))
    assert t.port == 8 and t.addresses


def test_allow_list_names_internal_receivers_explicitly() -> None:
    allow = AllowList.parse("127.0.0.0/8, ::1 hooks.internal")
    assert resolve_url("http://127.1:9/h", allow=allow).port == 9
    assert resolve_url("http://[::1]/h", allow=allow)
    with pytest.raises(UnsafeURLError):
        resolve_url("http://10.0.0.1/", allow=allow)  # not listed
    with pytest.raises(UnsafeURLError, match="credentials"):
        check_url("http://u:p@127.0.0.1/", allow=allow)  # never, allowed or not
    with pytest.raises(ValueError):
        AllowList.parse("http://not-an-entry/")


def test_redact_keeps_host_and_hides_tokens() -> None:
    shown = redact("https://hooks.example.com/services/T000/B000/XXXXSECRET?token=abc")
    assert shown is not None and "SECRET" not in shown and "abc" not in shown
    assert shown.startswith("https://hooks.example.com/services/…")
    assert redact("https://a.example/x?k=1") != redact("https://a.example/x?k=2")


# ── connect-time checks through httpx (a real server on loopback) ────────────


@pytest.fixture
def loopback_server() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def _answer(self) -> None:
            hits.append(self.path)
            if self.path == "/redirect-internal":
                self.send_response(302)
                self.send_header("Location", "http://0x7f000001:%d/secret" % self.server.server_address[1])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        do_GET = do_POST = _answer

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", hits
    srv.shutdown()
    srv.server_close()


def test_guarded_client_refuses_at_connect_time(loopback_server: tuple[str, list[str]]) -> None:
    base, hits = loopback_server
    port = base.rsplit(":", 1)[1]
    with guarded_client() as c:
        for url in (base + "/a", f"http://localhost:{port}/b", f"http://2130706433:{port}/c"):
            with pytest.raises(UnsafeURLError):
                c.post(url, content=b"{}")
    assert hits == []  # nothing reached the internal server
    with guarded_client(allow="127.0.0.1") as c:
        assert c.post(base + "/allowed", content=b"{}").status_code == 200
    assert hits == ["/allowed"]


def test_guarded_client_checks_every_redirect_hop(loopback_server: tuple[str, list[str]]) -> None:
    base, hits = loopback_server
    # the first hop is allowed by name, the redirect target (same server, other notation) is not
    host_allowed = base.replace("127.0.0.1", "localhost")
    with guarded_client(allow="localhost", follow_redirects=True) as c:
        with pytest.raises(UnsafeURLError):
            c.get(host_allowed + "/redirect-internal")
    assert hits == ["/redirect-internal"]


def test_guarded_async_client(loopback_server: tuple[str, list[str]]) -> None:
    base, hits = loopback_server

    async def go() -> httpx.Response:
        async with guarded_async_client() as c:
            with pytest.raises(UnsafeURLError):
                await c.post(base + "/x", content=b"{}")
        async with guarded_async_client(allow=["127.0.0.0/8"]) as c:
            return await c.post(base + "/y", content=b"{}")

    r = asyncio.run(go())
    assert r.status_code == 200 and hits == ["/y"]


def test_worker_audio_download_goes_through_the_guard(loopback_server: tuple[str, list[str]], tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The cluster worker's http(s) audio fetch (spec.audio): refused for an internal
    address, also when an allowed first hop redirects to one; allowed when listed."""
    from whisperop.cluster.work_queue import download_audio

    base, hits = loopback_server
    # the worker passes WHISPEROP_OUTBOUND_ALLOW (WorkerConfig.outbound_allow); s3 is touched only for s3:// URIs
    with pytest.raises(UnsafeURLError):
        download_audio(base + "/audio.wav", tmp_path, None, allow="")
    assert hits == []
    with pytest.raises(UnsafeURLError):
        download_audio(base.replace("127.0.0.1", "localhost") + "/redirect-internal", tmp_path, None, allow="localhost")
    assert hits == ["/redirect-internal"]
    got = download_audio(base + "/audio.wav", tmp_path, None, allow="127.0.0.1")
    assert got.read_bytes() == b"ok"
