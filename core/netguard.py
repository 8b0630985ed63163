"""SSRF address policy: which hosts and addresses a crawler may fetch. Pure: no I/O, no DNS.

Used twice: by the API (``check_url`` on seeds and webhooks, before anything is stored) and by
the engine (``check_url`` on every URL and redirect hop, ``AddressPolicy.blocked_reason`` on
every address DNS returns, right before connecting).

What is refused
    * every address that is not globally routable: loopback, RFC 1918, link-local,
      shared address space 100.64/10, ULA ``fc00::/7``, site-local ``fec0::/10``, multicast,
      unspecified, reserved and documentation ranges, Teredo;
    * IPv6 addresses that embed one of those IPv4 addresses: IPv4-mapped ``::ffff:a.b.c.d``,
      IPv4-compatible ``::a.b.c.d``, 6to4 ``2002::/16`` and NAT64 ``64:ff9b::/96``;
    * cloud metadata endpoints, **always**, even inside an allowed range: ``169.254.169.254``,
      ``169.254.170.2``/``.23`` (ECS/EKS), ``fd00:ec2::254``/``::23``, ``168.63.129.16``
      (Azure), ``100.100.100.200`` (Alibaba), ``192.0.0.192`` (Oracle) and the names
      ``metadata.google.internal``, ``metadata.goog``, ``metadata``, ``instance-data``.

Allowing ranges
    An operator may allow non-global ranges (``SKYCRAWL_ALLOW_CIDRS=127.0.0.0/8,10.0.0.0/8``)
    for demos, tests or intranet crawls. Nothing is allowed by default.

Host notations
    Hosts are read the way browsers (the WHATWG URL standard) and ``inet_aton`` read them, so
    ``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``, ``127.0.0.1.``, percent-encoded and
    full-width digits all mean ``127.0.0.1`` here too. A host that ends in a number but is not a
    valid IPv4 address (``1.2.3.4.5``, ``09.1.1.1``) is refused rather than guessed at.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from urllib.parse import unquote, urlsplit

from core.errors import UnsafeUrl

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "169.254.170.23",
        "168.63.129.16",
        "100.100.100.200",
        "192.0.0.192",
        "fd00:ec2::254",
        "fd00:ec2::23",
    )
)
METADATA_HOSTNAMES = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
ALLOWED_SCHEMES = frozenset({"http", "https"})

_NAT64 = IPv6Network("64:ff9b::/96")
_IPV4_COMPAT = IPv6Network("::/96")
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_HEX = frozenset("0123456789abcdefABCDEF")
_OCT = frozenset("01234567")
_DEC = frozenset("0123456789")
_MAX_CACHED_VERDICTS = 4096
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")


# --------------------------------------------------------------------------- host parsing


def _ipv4_number(part: str) -> int | None:
    """One dotted part, as WHATWG/inet_aton read it: 0x.. hex, 0.. octal, else decimal."""
    if part[:2] in ("0x", "0X"):
        digits, radix, alphabet = part[2:], 16, _HEX
    elif len(part) > 1 and part[0] == "0":
        digits, radix, alphabet = part[1:], 8, _OCT
    else:
        digits, radix, alphabet = part, 10, _DEC
    if not digits:
        return 0
    if not set(digits) <= alphabet:
        return None
    return int(digits, radix)


def _ends_in_number(host: str) -> bool:
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    last = parts[-1]
    return bool(last) and (set(last) <= _DEC or _ipv4_number(last) is not None)


def parse_ipv4(host: str) -> IPv4Address:
    """Parse any legacy IPv4 notation (``127.1``, ``0x7f.1``, ``2130706433``); ValueError if not."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if len(parts) > 4 or any(p == "" for p in parts):
        raise ValueError(f"invalid IPv4 host {host!r}")
    numbers = [_ipv4_number(p) for p in parts]
    if any(n is None for n in numbers):
        raise ValueError(f"invalid IPv4 host {host!r}")
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        raise ValueError(f"invalid IPv4 host {host!r}")
    total = values[-1]
    for i, n in enumerate(values[:-1]):
        total += n * 256 ** (3 - i)
    return IPv4Address(total)


def parse_host(host: str) -> IPAddress | str:
    """An address for IP literals in any notation, else the lower-case name without final dot.

    Raises ``ValueError`` for hosts no browser would accept (bad IPv6, bad IPv4 that ends in a
    number, empty).
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        return ip_address(unquote(host))  # scope ids ("fe80::1%25eth0") are kept
    name = unquote(host, errors="strict").translate(_DOTS)
    if not name.isascii():
        name = unicodedata.normalize("NFKC", name).translate(_DOTS)
    name = name.lower()
    if not name.strip("."):
        raise ValueError("empty host")
    if _ends_in_number(name):
        return parse_ipv4(name)
    return name.rstrip(".")


# --------------------------------------------------------------------------- address policy


def _embedded_ipv4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, 6to4, NAT64)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _is_metadata(ip: IPAddress) -> bool:
    if ip in METADATA_ADDRESSES:
        return True
    if isinstance(ip, IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is None and ip in _IPV4_COMPAT:
            inner = IPv4Address(int(ip) & 0xFFFFFFFF)
        return inner in METADATA_ADDRESSES
    return False


def _category(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address, or None if it is."""
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, IPv6Address) and ip.is_site_local:
        return "site-local"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "non-global"
    return None


def _in(ip: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(ip.version == net.version and ip in net for net in networks)


def is_blocked_address(ip: IPAddress, allow: Sequence[IPNetwork] = ()) -> str | None:
    """A reason why a crawler must not connect to ``ip``, or None if it may.

    Metadata endpoints are always refused; other non-global addresses are refused unless
    ``ip`` (or the IPv4 address it embeds) lies in one of the ``allow`` networks.
    """
    if _is_metadata(ip):
        return f"cloud metadata endpoint {ip}"
    embedded = _embedded_ipv4(ip) if isinstance(ip, IPv6Address) else None
    if embedded is None:
        category = _category(ip)
        reason = f"{category} address {ip}"
    else:
        category = _category(embedded)
        reason = f"{category} address {embedded} embedded in {ip}"
    if category is None:
        return None
    if _in(ip, allow) or (embedded is not None and _in(embedded, allow)):
        return None
    return reason


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which non-global ranges an operator allows. ``AddressPolicy()`` allows none."""

    allow: tuple[IPNetwork, ...] = ()
    # verdicts per host as written: hosts repeat on every URL of a site (bounded, see below)
    _verdicts: dict[str, str | None] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    @classmethod
    def from_cidrs(cls, cidrs: Iterable[str]) -> AddressPolicy:
        """Build from strings like ``"127.0.0.0/8"``; ValueError names the bad entry."""
        networks: list[IPNetwork] = []
        for cidr in cidrs:
            text = cidr.strip()
            if not text:
                continue
            try:
                networks.append(ip_network(text, strict=False))
            except ValueError as exc:
                raise ValueError(f"invalid CIDR {cidr!r} in allow list: {exc}") from exc
        return cls(tuple(networks))

    def blocked_reason(self, ip: IPAddress) -> str | None:
        return is_blocked_address(ip, self.allow)

    def check_address(self, address: str) -> None:
        """Raise UnsafeUrl if the resolved ``address`` (textual IP) may not be connected to."""
        try:
            ip = ip_address(address)
        except ValueError as exc:
            raise UnsafeUrl(f"resolver returned a non-IP address {address!r}") from exc
        reason = self.blocked_reason(ip)
        if reason is not None:
            raise UnsafeUrl(f"refused to connect: {reason}")

    def check_host(self, host: str) -> None:
        """Raise UnsafeUrl for a blocked IP literal (any notation) or metadata host name."""
        try:
            verdict = self._verdicts[host]
        except KeyError:
            if len(self._verdicts) >= _MAX_CACHED_VERDICTS:
                self._verdicts.clear()
            verdict = self._verdicts[host] = _host_verdict(self, host)
        if verdict is not None:
            raise UnsafeUrl(verdict)


def _host_verdict(policy: AddressPolicy, host: str) -> str | None:
    """Why ``host`` (as written in a URL) is refused, or None."""
    try:
        parsed = parse_host(host)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"invalid host {host!r}: {exc}"
    if isinstance(parsed, str):
        if parsed in METADATA_HOSTNAMES:
            return f"refused host {parsed!r}: cloud metadata endpoint"
        return None
    reason = policy.blocked_reason(parsed)
    return None if reason is None else f"refused host {host!r}: {reason}"


def check_url(url: str, policy: AddressPolicy) -> None:
    """Raise ``UnsafeUrl`` unless ``url`` is http(s) with a host the policy lets us fetch.

    Names are checked against the metadata list only; what they resolve to is checked by the
    engine after DNS (``AddressPolicy.check_address``).
    """
    if _CONTROL_OR_SPACE.search(url):
        raise UnsafeUrl("URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise UnsafeUrl(f"not a valid URL: {exc}") from exc
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise UnsafeUrl(f"scheme {parts.scheme or '(none)'!r} is not allowed (only http, https)")
    if "\\" in parts.netloc:
        raise UnsafeUrl("URL authority contains a backslash")
    if not host:
        raise UnsafeUrl("URL has no host")
    policy.check_host(host)
