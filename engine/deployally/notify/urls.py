"""Where a webhook may be sent: a well-formed http(s) URL, never to an address the engine's
operator did not allow.

Loopback, link-local (where clouds serve instance metadata and credentials) and the engine's
own host (its addresses, and the container networks on it) are refused unless engine.yaml allows them (`webhooks: {allow: [...]}`): whoever
registers a webhook must not make the engine call into the machine it runs on. The check runs
at registration and again on every delivery, on the addresses the host name resolves to then,
so a name that later resolves to loopback is refused too.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Collection, Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from deployally.types import Network

LOOPBACK = "loopback"
LINK_LOCAL = "link_local"
ENGINE_HOST = "engine_host"
# What engine.yaml's `webhooks.allow` may list, each with how a refusal describes it.
KINDS: dict[str, str] = {
    LOOPBACK: "a loopback address",
    LINK_LOCAL: "a link-local or cloud metadata address",
    ENGINE_HOST: "an address of the engine's own host or of a container network on it",
}
# Instance metadata outside 169.254.0.0/16 and fe80::/10: AWS over IPv6, Alibaba Cloud.
_METADATA = (ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200"))

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# The container networks on the engine's host (Workspace.host_networks), asked when needed.
HostNetworks = Callable[[], Collection[Network]]


class RefusedAddress(OSError):
    """A webhook's host resolved only to addresses the engine's operator did not allow."""


def check_url(url: str) -> str | None:
    """None if url is a well-formed http(s) URL with a host, else a message saying what to fix."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        return f"url: {url!r} is not a valid URL ({exc}); use http://host[:port]/path"
    if parts.scheme not in ("http", "https"):
        shown = f"{parts.scheme}:" if parts.scheme else "no scheme"
        return f"url: {url!r} has {shown}; only http:// and https:// URLs can receive webhooks"
    if not parts.hostname:
        return f"url: {url!r} has no host; use {parts.scheme}://host[:port]/path"
    return None


def address_kind(address: str, networks: Collection[Network] = ()) -> str | None:
    """Which refused kind (LOOPBACK, LINK_LOCAL, ENGINE_HOST) an IP address is, or None;
    `networks` are the container networks on the engine's host."""
    try:
        ip: Address = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if ip.is_loopback or ip.is_unspecified:  # a connection to 0.0.0.0 reaches this host
        return LOOPBACK
    if ip.is_link_local or ip in _METADATA:
        return LINK_LOCAL
    # A container on the host's networks is the host too: reached through it, never published.
    if _is_own_address(ip) or any(ip.version == n.version and ip in n for n in networks):
        return ENGINE_HOST
    return None


def refusal(
    url: str, addresses: Iterable[str], allowed: Collection[str], networks: Collection[Network] = ()
) -> str | None:
    """Why url may not be posted to when its host is at `addresses`, or None."""
    for address in addresses:
        kind = address_kind(address, networks)
        if kind is not None and kind not in allowed:
            host = urlsplit(url.strip()).hostname or url
            where = address if address == host else f"{host} ({address})"
            return (
                f"url: {url!r} points at {where}, {KINDS[kind]}; webhooks are not sent there "
                f"unless engine.yaml allows it (webhooks: {{allow: [{kind}]}})"
            )
    return None


def check_destination(
    url: str, allowed: Collection[str], networks: HostNetworks = lambda: ()
) -> str | None:
    """Registration check: check_url, then every address the host resolves to now (blocking:
    DNS, and `networks` when engine_host is refused).

    A name that does not resolve yet is accepted (delivery checks it again); one that
    resolves to a refused address is not.
    """
    if problem := check_url(url):
        return problem
    host = urlsplit(url.strip()).hostname or ""
    literal = _ip_literal(host)
    nets = () if ENGINE_HOST in allowed else networks()
    return refusal(url, [literal] if literal else _resolve(host), allowed, nets)


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, keeping only the addresses a webhook may be sent to.

    The connection is made to an address this returned, so no later lookup can swap in
    another (DNS rebinding). aiohttp does not resolve IP literals: the sender checks those.
    """

    def __init__(
        self, allowed: Collection[str], networks: Callable[[], Collection[Network]] = lambda: ()
    ) -> None:
        self._allowed = frozenset(allowed)
        self._networks = networks  # must not block: the sender's latest list
        self._inner = DefaultResolver()

    def __repr__(self) -> str:
        return f"GuardedResolver(allowed={sorted(self._allowed)})"

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The addresses of host that are allowed; RefusedAddress when none is."""
        found = await self._inner.resolve(host, port, family)
        nets = self._networks()
        kept = [r for r in found if _allowed(r["host"], self._allowed, nets)]
        if not kept:
            shown = ", ".join(sorted({r["host"] for r in found}))
            kinds = sorted({k for r in found if (k := address_kind(r["host"], nets)) is not None})
            raise RefusedAddress(
                f"{host} resolves to {shown} ({', '.join(KINDS[k] for k in kinds)}), where "
                f"webhooks are not sent unless engine.yaml allows it "
                f"(webhooks: {{allow: [{', '.join(kinds)}]}})"
            )
        return kept

    async def close(self) -> None:
        """Close the wrapped resolver."""
        await self._inner.close()


def _allowed(address: str, allowed: Collection[str], networks: Collection[Network]) -> bool:
    kind = address_kind(address, networks)
    return kind is None or kind in allowed


def _ip_literal(host: str) -> str | None:
    """The address an IP-literal host names, zone id dropped, or None for a name.

    getaddrinfo cannot read a zone id written as a URL writes it (`fe80::1%25eth0`), so a
    literal is checked as itself, never by resolving it.
    """
    try:
        return str(ipaddress.ip_address(unquote(host).split("%", 1)[0]))
    except ValueError:
        return None


def _resolve(host: str) -> list[str]:
    """Every address host resolves to now (the host itself when it is a literal); [] if none."""
    try:
        infos: list[Any] = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


def _is_own_address(ip: Address) -> bool:
    """True when ip is assigned to this host: binding a socket to it succeeds only then."""
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(ip), 0))
    except OSError:
        return False
    return True
