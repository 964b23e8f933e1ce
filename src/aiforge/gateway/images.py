"""Image URLs in chat requests: fetched once, by the gateway, and inlined as data URLs.

Fetching a URL a client names is a server-side request forgery risk: the URL may point at
the cloud's metadata service, at loopback, or at the private network the gateway sits in.
So the gateway alone fetches, before routing, and rewrites each http(s) ``image_url`` into
a ``data:`` URL; replicas (and vLLM) only ever decode bytes the gateway vetted.

Two parts:

* **Policy** (pure): :func:`address_refusal` says why an IP address may not be fetched —
  loopback, private, link-local, unique-local, site-local, multicast, unspecified,
  reserved, shared (CGNAT), any other non-global address, and IPv4 addresses hidden in
  IPv6 (IPv4-mapped, IPv4-compatible, 6to4, NAT64, Teredo) judged as the IPv4 they carry.
  Cloud metadata addresses are refused always; :attr:`FetchPolicy.allow_networks`
  (``AIFORGE_IMAGE_FETCH_ALLOW_NETWORKS``, empty by default) lets an admin open the rest
  for named networks. :func:`url_refusal` vets a URL's scheme, host and credentials.
* **I/O** (:class:`ImageFetcher`): resolve the host, vet *every* address it resolves to,
  then connect to the vetted address itself (the URL is rewritten to the IP; ``Host`` and
  TLS SNI/verification keep the name), so a second DNS answer cannot swap in a private
  address between check and connect. Redirects are followed by hand, each hop vetted the
  same way, at most :attr:`FetchPolicy.max_redirects`. The whole fetch has one deadline;
  the body is streamed and cut off past :attr:`FetchPolicy.max_bytes`; the content type
  must be an image type, and the image's header (read, not decoded) must be PNG, JPEG,
  WebP or GIF within :attr:`FetchPolicy.max_pixels`.

Every refusal is a 400 whose ``param`` names the part, e.g.
``messages[0].content[1].image_url.url``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import ipaddress
import socket
import warnings
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
import orjson

from aiforge.config import Settings
from aiforge.gateway.request import ProxiedRequest
from aiforge.protocol.openai.errors import OpenAIError

__all__ = [
    "METADATA_ADDRESSES",
    "FetchPolicy",
    "ImageFetcher",
    "address_refusal",
    "inline_images",
    "url_refusal",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> addresses``: DNS, a seam for tests."""

METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server (a public address)
    )
)
"""Cloud metadata services: never fetched, whatever the allowlist says."""

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IMAGE_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/jpg": "JPEG",
                "image/webp": "WEBP", "image/gif": "GIF"}  # fmt: skip
_FORMAT_MEDIA = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


# -- policy (pure) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """What an image fetch may reach and take; built from :class:`Settings`."""

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 32 * 1024 * 1024
    max_images: int = 16
    timeout_s: float = 10.0
    max_redirects: int = 3
    allow_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchPolicy:
        """Raises ``ValueError`` for an allowlist entry that is not an IP address or network."""
        return cls(
            max_bytes=settings.image_max_bytes,
            max_pixels=settings.image_max_pixels,
            max_images=settings.image_max_per_request,
            timeout_s=settings.image_fetch_timeout_s,
            max_redirects=settings.image_fetch_max_redirects,
            allow_networks=tuple(
                ipaddress.ip_network(n, strict=False) for n in settings.image_fetch_allow_networks
            ),
        )


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, NAT64, Teredo)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(address))
    return None


def address_refusal(address: IPAddress, allow: Sequence[IPNetwork] = ()) -> str | None:
    """Why ``address`` may not be fetched (a phrase), or None when it may."""
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    inner = embedded_ipv4(address)
    if inner is not None:
        reason = address_refusal(inner, allow)
        return None if reason is None else f"{reason} (inside an IPv6 address)"
    if any(address.version == net.version and address in net for net in allow):
        return None
    for reason, hit in _address_classes(address):
        if hit:
            return reason
    return None


def _address_classes(address: IPAddress) -> Iterator[tuple[str, bool]]:
    yield "a loopback address", address.is_loopback
    yield "an unspecified address", address.is_unspecified
    yield "a link-local address", address.is_link_local
    yield "a multicast address", address.is_multicast
    yield "a shared (carrier-grade NAT) address", address in _CGNAT
    if isinstance(address, ipaddress.IPv6Address):
        yield "a site-local address", address.is_site_local
        yield "a unique-local address", address in ipaddress.ip_network("fc00::/7")
    yield "a reserved address", address.is_reserved
    yield "a private address", address.is_private
    yield "not a public address", not address.is_global


def url_refusal(url: str) -> str | None:
    """Why a URL may not be fetched at all (scheme, host, credentials), or None."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # a malformed port raises here
    except ValueError:
        return "it is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "only http and https URLs are fetched"
    if not parts.hostname:
        return "it has no host"
    if parts.username is not None or parts.password is not None:
        return "URLs with credentials are not fetched"
    return None


# -- I/O -------------------------------------------------------------------------------


class ImageRefused(Exception):
    """A fetch refused or failed; the message completes "The image URL was refused: ..."."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver (an IP literal resolves to itself)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(slots=True)
class ImageFetcher:
    """Fetches one image URL under a :class:`FetchPolicy`; see the module docstring."""

    policy: FetchPolicy
    resolver: Resolver = system_resolver
    transport: httpx.AsyncBaseTransport | None = field(default=None)
    """httpx's default transport unless given (tests)."""

    async def fetch(self, url: str) -> str:
        """The image as a ``data:`` URL. Raises :class:`ImageRefused` with the reason."""
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                return await self._follow(url)
        except TimeoutError:
            raise ImageRefused(f"fetching it took more than {self.policy.timeout_s:g} s") from None

    async def _follow(self, url: str) -> str:
        timeout = httpx.Timeout(self.policy.timeout_s)
        async with httpx.AsyncClient(
            transport=self.transport, timeout=timeout, trust_env=False, follow_redirects=False
        ) as client:
            for _ in range(self.policy.max_redirects + 1):
                request = await self._vetted_request(client, url)
                response = await client.send(request, stream=True)
                try:
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    return await self._image(response)
                finally:
                    await response.aclose()
        raise ImageRefused(f"it redirected more than {self.policy.max_redirects} times")

    async def _vetted_request(self, client: httpx.AsyncClient, url: str) -> httpx.Request:
        """A request to ``url``'s vetted IP address, carrying the host's name."""
        reason = url_refusal(url)
        if reason is not None:
            raise ImageRefused(reason)
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        try:
            resolved = await self.resolver(host, port)
        except OSError:
            raise ImageRefused(f"the host {host!r} could not be resolved") from None
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolved]
        if not addresses:
            raise ImageRefused(f"the host {host!r} could not be resolved")
        for address in addresses:
            why = address_refusal(address, self.policy.allow_networks)
            if why is not None:
                raise ImageRefused(f"the host {host!r} resolves to {address}, {why}")
        pinned = addresses[0]
        literal = f"[{pinned}]" if pinned.version == 6 else str(pinned)
        netloc = f"{literal}:{parts.port}" if parts.port else literal
        target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        host_header = parts.netloc.rsplit("@", 1)[-1]
        return client.build_request(
            "GET",
            target,
            headers={"Host": host_header, "Accept": "image/*"},
            extensions={"sni_hostname": host},
        )

    async def _image(self, response: httpx.Response) -> str:
        if response.status_code != 200:
            raise ImageRefused(f"it answered HTTP {response.status_code}")
        media = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media not in _IMAGE_TYPES:
            raise ImageRefused(
                f"its content type is {media or 'missing'!r}, not PNG, JPEG, WebP or GIF"
            )
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.policy.max_bytes:
            raise ImageRefused(f"it is larger than the limit of {self.policy.max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > self.policy.max_bytes:
                raise ImageRefused(f"it is larger than the limit of {self.policy.max_bytes} bytes")
            chunks.append(chunk)
        data = b"".join(chunks)
        image_format = probe_image(data, self.policy.max_pixels)
        return f"data:{_FORMAT_MEDIA[image_format]};base64," + base64.b64encode(data).decode()


def probe_image(data: bytes, max_pixels: int) -> str:
    """The image's format from its header (no pixel is decoded), within ``max_pixels``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(_FORMAT_MEDIA))
            width, height = image.size
            image_format = str(image.format)
    except Image.DecompressionBombError:
        raise ImageRefused(f"the image has more than the limit of {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise ImageRefused("its body is not a PNG, JPEG, WebP or GIF image") from None
    if width * height > max_pixels:
        raise ImageRefused(
            f"the image is {width}x{height} pixels, more than the limit of {max_pixels}"
        )
    return image_format


# -- the request -------------------------------------------------------------------------


def _image_parts(payload: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(param, image_url object)`` of every well-formed image part, in order."""
    messages = payload.get("messages")
    for i, message in enumerate(messages if isinstance(messages, list) else ()):
        content = message.get("content") if isinstance(message, dict) else None
        for j, part in enumerate(content if isinstance(content, list) else ()):
            if isinstance(part, dict) and part.get("type") == "image_url":
                image = part.get("image_url")
                if isinstance(image, dict) and isinstance(image.get("url"), str):
                    yield f"messages[{i}].content[{j}].image_url.url", image


async def inline_images(
    parsed: ProxiedRequest, settings: Settings, fetcher: ImageFetcher | None = None
) -> ProxiedRequest:
    """``parsed`` with every http(s) image URL fetched and replaced by a data URL (the same
    request when it has none). Raises a 400 :class:`OpenAIError` naming the part at fault,
    or for more images than ``AIFORGE_IMAGE_MAX_PER_REQUEST``."""
    body = parsed.upstream_body
    if b"image_url" not in body and b"\\u" not in body:
        return parsed  # no JSON string in it can say "image_url": it would spell it or escape it
    parts = list(_image_parts(parsed.payload))
    if not parts:
        return parsed
    fetcher = fetcher or ImageFetcher(FetchPolicy.from_settings(settings))
    if len(parts) > fetcher.policy.max_images:
        raise OpenAIError(
            f"This request has {len(parts)} images; at most {fetcher.policy.max_images} are "
            "taken per request.",
            param=parts[fetcher.policy.max_images][0],
            code="too_many_images",
        )
    remote = [
        (param, image)
        for param, image in parts
        if image["url"].lstrip()[:8].lower().startswith(("http://", "https://"))
    ]
    if not remote:
        return parsed
    tasks = [asyncio.create_task(_fetch_part(fetcher, p, image["url"])) for p, image in remote]
    try:
        fetched = await asyncio.gather(*tasks)
    except BaseException:  # one refused (or the caller left): stop the other fetches
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    for (_, image), data_url in zip(remote, fetched, strict=True):
        image["url"] = data_url
    return replace(parsed, upstream_body=orjson.dumps(parsed.payload))


async def _fetch_part(fetcher: ImageFetcher, param: str, url: str) -> str:
    try:
        return await fetcher.fetch(url.strip())
    except ImageRefused as exc:
        raise OpenAIError(
            f"The image URL was refused: {exc}.", param=param, code="invalid_image_url"
        ) from None
    except httpx.HTTPError as exc:
        raise OpenAIError(
            f"The image URL could not be fetched: {type(exc).__name__}.",
            param=param,
            code="invalid_image_url",
        ) from None
