"""Outbound URL guard: every URL the system fetches or POSTs to on a user's behalf.

A user hands us URLs (``webhook_url``, audio URLs); without a guard the
server becomes a proxy into its own network: ``http://127.0.0.1:2379`` (etcd),
``http://169.254.169.254/`` (cloud metadata), ``http://10.0.0.1:6443`` (the
API server). The original accepted all of those, and also the same addresses
written as ``2130706433``, ``0x7f000001``, ``127.1`` or ``[::ffff:127.0.0.1]``,
and forwarded ``user:pass@`` as Basic auth.

Rules (docs/security.md):

* only ``http``/``https``, a host, a port in 1–65535, no ``user:pass@``;
* the host is resolved and **every** address must be public: loopback,
  private, link-local, unique-local, multicast, unspecified, reserved,
  shared (100.64/10) and IPv6 forms that embed such an IPv4 address
  (IPv4-mapped, 6to4, Teredo, NAT64) are refused. IPv4 literals are read the
  way the C resolver reads them (``inet_aton``: decimal, hex, octal, short
  forms), so a notation cannot hide an address;
* the check runs at submit time (a clear 400) *and* at connect time
  (:class:`GuardedBackend` resolves, checks and connects to the checked
  address, so DNS that changes between the two — rebinding — cannot reach an
  internal address, and a redirect is checked like the first URL);
* :class:`AllowList` (``WHISPEROP_OUTBOUND_ALLOW``: host names, addresses,
  CIDRs) lets an operator name internal receivers explicitly. Nothing is
  allowed by default, not even loopback.

Only the standard library is imported at module level; the httpx/httpcore
integration is imported lazily by :func:`guarded_async_client` and
:func:`guarded_client`.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union
from urllib.parse import urlsplit

from whisperop.core.errors import UnsafeURLError

if TYPE_CHECKING:
    import httpx

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

ALLOW_ENV = "WHISPEROP_OUTBOUND_ALLOW"
SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}
# what inet_aton reads as an IPv4 address: 1–4 parts, each decimal, octal (0…) or hex (0x…)
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$", re.IGNORECASE)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_LOOPBACK = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


# ── allow-list ───────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class AllowList:
    """Host names (exact, case-insensitive) and networks a URL may reach although internal."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: str | Iterable[str] | AllowList | None) -> AllowList:
        """``"localhost, 127.0.0.0/8 hooks.internal ::1"`` (commas or spaces) or a list of entries."""
        if isinstance(entries, AllowList):
            return entries
        if entries is None:
            return cls()
        items = re.split(r"[\s,]+", entries) if isinstance(entries, str) else list(entries)
        hosts: set[str] = set()
        nets: list[IPNetwork] = []
        for raw in items:
            item = raw.strip().strip("[]").rstrip(".").lower()
            if not item:
                continue
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                if not re.match(r"^[a-z0-9_.-]+$", item):
                    raise ValueError(f"{ALLOW_ENV}: {raw!r} is neither a host name, an address nor a CIDR") from None
                hosts.add(item)
        return cls(frozenset(hosts), tuple(nets))

    def allows_host(self, host: str) -> bool:
        return host.rstrip(".").lower() in self.hosts

    def allows_address(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self.networks if net.version == ip.version)

    def allows_loopback_name(self, host: str) -> bool:
        """``localhost`` names: listed by name, or loopback allowed by address."""
        return self.allows_host(host) or any(self.allows_address(ip) for ip in _LOOPBACK)

    def __bool__(self) -> bool:
        return bool(self.hosts or self.networks)


def _is_localhost(host: str) -> bool:
    h = host.rstrip(".").lower()
    return h == "localhost" or h.endswith(".localhost")


AllowSpec = Union[AllowList, str, Sequence[str], None]


# ── addresses ────────────────────────────────────────────────────────────────


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def blocked_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address (None when it is)."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            why = blocked_reason(inner)
            return f"{why} (IPv4 {inner} inside {ip})" if why else None
        if ip.is_site_local:
            return "site-local"
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("shared address space", isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED),
    )
    for name, hit in checks:
        if hit:
            return name
    return None if ip.is_global else "not a public address"


def parse_ip_host(host: str) -> IPAddress | None:
    """The address a host string denotes, in any notation the C resolver accepts; None for a name."""
    h = host.strip("[]").rstrip(".")
    h = h.split("%", 1)[0]  # an IPv6 zone id selects an interface, not another address
    try:
        return ipaddress.ip_address(h)
    except ValueError:
        pass
    if _NUMERIC_HOST.match(h):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(h))
        except OSError:
            raise UnsafeURLError(f"host {host!r} is not a valid address") from None
    return None


def _check_address(ip: IPAddress, allow: AllowList, shown: str) -> None:
    why = blocked_reason(ip)
    if why and not allow.allows_address(ip):
        raise UnsafeURLError(f"{shown} resolves to {ip}, a {why} address; "
                             f"internal receivers must be listed in {ALLOW_ENV}")


# ── URLs ─────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Target:
    """A URL that passed the syntactic checks: where a connection would go."""

    url: str
    scheme: str
    host: str  # lower-case, no brackets, no trailing dot
    port: int
    literal: IPAddress | None  # the address when the host is one (any notation)
    addresses: tuple[IPAddress, ...] = field(default=())


def parse_target(url: str, *, allow: AllowSpec = None, what: str = "URL") -> Target:
    """Syntax, scheme, userinfo, port, and the address of a literal host (no DNS)."""
    allow = AllowList.parse(allow)
    url = (url or "").strip()
    if any(c in url for c in "\r\n\t\x00 "):
        raise UnsafeURLError(f"{what} contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURLError(f"{what} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UnsafeURLError(f"{what} must be an http(s) URL, got scheme {parts.scheme or 'none'!r}")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UnsafeURLError(f"{what} must not contain credentials (user:password@)")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeURLError(f"{what} must be an http(s) URL with a host")
    if port == 0:
        raise UnsafeURLError(f"{what} has port 0")
    literal = parse_ip_host(host)
    if literal is not None:
        _check_address(literal, allow, f"{what} host {host!r}")
    elif _is_localhost(host) and not allow.allows_loopback_name(host):
        raise UnsafeURLError(f"{what} host {host!r} is loopback; internal receivers must be listed in {ALLOW_ENV}")
    return Target(url, scheme, host, port or DEFAULT_PORTS[scheme], literal)


def check_url(url: str, *, allow: AllowSpec = None, what: str = "URL") -> str:
    """The stripped URL when it passes the checks that need no DNS; :class:`UnsafeURLError` otherwise."""
    return parse_target(url, allow=allow, what=what).url


def check_addresses(target: Target, addresses: Iterable[IPAddress], *, allow: AllowSpec = None, what: str = "URL") -> Target:
    allow = AllowList.parse(allow)
    found = tuple(dict.fromkeys(addresses))
    if not found:
        raise UnsafeURLError(f"{what} host {target.host!r} does not resolve")
    if not allow.allows_host(target.host):
        for ip in found:
            _check_address(ip, allow, f"{what} host {target.host!r}")
    return Target(target.url, target.scheme, target.host, target.port, target.literal, found)


def _addresses(infos: Iterable[tuple[Any, ...]]) -> list[IPAddress]:
    out: list[IPAddress] = []
    for info in infos:
        addr = str(info[4][0]).split("%", 1)[0]
        out.append(ipaddress.ip_address(addr))
    return out


def resolve_url(url: str, *, allow: AllowSpec = None, what: str = "URL") -> Target:
    """:func:`check_url` plus DNS: every address the host resolves to must pass."""
    allow = AllowList.parse(allow)
    t = parse_target(url, allow=allow, what=what)
    if t.literal is not None:
        return check_addresses(t, [t.literal], allow=allow, what=what)
    try:
        infos = socket.getaddrinfo(t.host, t.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UnsafeURLError(f"{what} host {t.host!r} does not resolve: {exc}") from None
    return check_addresses(t, _addresses(infos), allow=allow, what=what)


async def aresolve_url(url: str, *, allow: AllowSpec = None, what: str = "URL") -> Target:
    """:func:`resolve_url` without blocking the event loop."""
    allow = AllowList.parse(allow)
    t = parse_target(url, allow=allow, what=what)
    if t.literal is not None:
        return check_addresses(t, [t.literal], allow=allow, what=what)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(t.host, t.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UnsafeURLError(f"{what} host {t.host!r} does not resolve: {exc}") from None
    return check_addresses(t, _addresses(infos), allow=allow, what=what)


def redact(url: str | None) -> str | None:
    """A URL fit for logs: scheme, host, port and the first path segment; the rest
    (where webhook tokens live) becomes ``…``, plus a short digest to tell URLs apart."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url #" + hashlib.sha256(url.encode("utf-8", "replace")).hexdigest()[:8] + ">"
    if ":" in host:
        host = f"[{host}]"
    segs = [s for s in parts.path.split("/") if s]
    path = "/" + segs[0] if segs else "/"
    if len(segs) > 1 or parts.query or parts.fragment:
        path += "/…" if len(segs) > 1 else "…"
    digest = hashlib.sha256(url.encode("utf-8", "replace")).hexdigest()[:8]
    return f"{parts.scheme}://{host}{port}{path} #{digest}"


# ── httpx integration: check at connect time ────────────────────────────────


def _resolve_connect(host: str, port: int, allow: AllowList) -> list[str]:
    """Addresses to connect to for ``host`` (all checked), in resolver order."""
    literal = parse_ip_host(host)
    if literal is not None:
        if not allow.allows_host(host):
            _check_address(literal, allow, f"host {host!r}")
        return [str(literal)]
    if _is_localhost(host) and not allow.allows_loopback_name(host):
        raise UnsafeURLError(f"host {host!r} is loopback; internal receivers must be listed in {ALLOW_ENV}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UnsafeURLError(f"host {host!r} does not resolve: {exc}") from None
    ips = list(dict.fromkeys(_addresses(infos)))
    if not ips:
        raise UnsafeURLError(f"host {host!r} does not resolve")
    if not allow.allows_host(host):
        for ip in ips:
            _check_address(ip, allow, f"host {host!r}")
    return [str(ip) for ip in ips]


def _guarded_backends(allow: AllowList, sync_inner: Any = None, async_inner: Any = None) -> tuple[Any, Any]:
    """httpcore network backends (sync, async) whose ``connect_tcp`` resolves, checks
    every address and connects to a checked one — the name is never resolved again."""
    import httpcore

    class SyncGuarded(httpcore.NetworkBackend):
        def __init__(self) -> None:
            self.inner = sync_inner or httpcore.SyncBackend()

        def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                        local_address: str | None = None, socket_options: Any = None) -> httpcore.NetworkStream:
            last: Exception | None = None
            for ip in _resolve_connect(host, port, allow):
                try:
                    return self.inner.connect_tcp(ip, port, timeout=timeout, local_address=local_address,
                                                  socket_options=socket_options)
                except httpcore.ConnectError as exc:
                    last = exc
            assert last is not None
            raise last

        def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> httpcore.NetworkStream:
            raise UnsafeURLError("unix sockets are not an outbound destination")

        def sleep(self, seconds: float) -> None:
            self.inner.sleep(seconds)

    class AsyncGuarded(httpcore.AsyncNetworkBackend):
        def __init__(self) -> None:
            self.inner = async_inner or httpcore.AnyIOBackend()

        async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                              local_address: str | None = None, socket_options: Any = None) -> httpcore.AsyncNetworkStream:
            last: Exception | None = None
            for ip in await asyncio.to_thread(_resolve_connect, host, port, allow):
                try:
                    return await self.inner.connect_tcp(ip, port, timeout=timeout, local_address=local_address,
                                                        socket_options=socket_options)
                except httpcore.ConnectError as exc:
                    last = exc
            assert last is not None
            raise last

        async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                      socket_options: Any = None) -> httpcore.AsyncNetworkStream:
            raise UnsafeURLError("unix sockets are not an outbound destination")

        async def sleep(self, seconds: float) -> None:
            await self.inner.sleep(seconds)

    return SyncGuarded(), AsyncGuarded()


def guarded_async_client(allow: AllowSpec = None, **kwargs: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` that checks every connection it opens (redirects included,
    though ``follow_redirects`` stays off unless asked for) and never uses a proxy."""
    import httpx

    # a client ignores ``limits`` when given a transport: they belong to the transport
    transport = httpx.AsyncHTTPTransport(retries=0, limits=kwargs.pop("limits", httpx.Limits(max_connections=100, max_keepalive_connections=20)))
    pool = transport._pool
    pool._network_backend = _guarded_backends(AllowList.parse(allow), async_inner=pool._network_backend)[1]
    return httpx.AsyncClient(transport=transport, trust_env=False, **kwargs)


def guarded_client(allow: AllowSpec = None, **kwargs: Any) -> httpx.Client:
    """The synchronous :func:`guarded_async_client`."""
    import httpx

    transport = httpx.HTTPTransport(retries=0, limits=kwargs.pop("limits", httpx.Limits(max_connections=100, max_keepalive_connections=20)))
    pool = transport._pool
    pool._network_backend = _guarded_backends(AllowList.parse(allow), sync_inner=pool._network_backend)[0]
    return httpx.Client(transport=transport, trust_env=False, **kwargs)

