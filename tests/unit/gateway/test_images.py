"""Image URL fetching: the address policy (pure), and the fetcher against a real local
server on 127.0.0.1 (allowlisted where a fetch must succeed; refused as loopback otherwise)."""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Iterator

import orjson
import pytest

from aiforge.config import Settings
from aiforge.gateway.images import (
    FetchPolicy,
    ImageFetcher,
    ImageRefused,
    address_refusal,
    inline_images,
    url_refusal,
)
from aiforge.gateway.request import parse_request
from aiforge.protocol.openai.errors import OpenAIError
from aiforge.testing.image_server import ImageServer, png_bytes

LOOPBACK_V4 = (ipaddress.ip_network("127.0.0.1/32"),)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("fec0::1", "site-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "private"),  # documentation (Python counts it private)
        ("198.18.0.1", "private"),  # benchmarking
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("168.63.129.16", "metadata"),
        ("::ffff:127.0.0.1", "loopback address (inside an IPv6 address)"),
        ("::ffff:169.254.169.254", "metadata"),
        ("::ffff:10.0.0.1", "private address (inside"),
        ("::127.0.0.1", "loopback address (inside"),
        ("2002:7f00:1::", "loopback address (inside"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", "private address (inside"),  # NAT64 of 10.0.0.1
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private address (inside"),  # Teredo of 10.0.0.1
    ],
)
def test_refused_addresses(address: str, reason: str) -> None:
    refusal = address_refusal(ipaddress.ip_address(address))
    assert refusal is not None
    assert reason in refusal


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "93.184.216.34"]
)
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_the_allowlist_opens_named_networks_but_never_metadata() -> None:
    allow = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("169.254.0.0/16"))
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), allow) is None
    assert address_refusal(ipaddress.ip_address("::ffff:127.0.0.1"), allow) is None
    assert address_refusal(ipaddress.ip_address("169.254.169.254"), allow) is not None
    assert address_refusal(ipaddress.ip_address("::1"), allow) is not None
    assert address_refusal(ipaddress.ip_address("10.0.0.1"), allow) is not None


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://example.com/cat.png", True),
        ("http://example.com:8080/cat.png?x=1", True),
        ("ftp://example.com/cat.png", False),
        ("file:///etc/passwd", False),
        ("gopher://example.com/", False),
        ("http:///nohost", False),
        ("http://user:pw@example.com/cat.png", False),
        ("http://example.com:99999/", False),
    ],
)
def test_url_refusal(url: str, ok: bool) -> None:
    assert (url_refusal(url) is None) is ok


def test_policy_from_settings_validates_the_allowlist() -> None:
    settings = Settings(image_fetch_allow_networks=["127.0.0.1", "10.0.0.0/8"])
    policy = FetchPolicy.from_settings(settings)
    assert ipaddress.ip_network("127.0.0.1/32") in policy.allow_networks
    with pytest.raises(ValueError, match="does not appear to be"):
        FetchPolicy.from_settings(Settings(image_fetch_allow_networks=["intranet"]))


# -- the fetcher, against a real local server ---------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[ImageServer]:
    with ImageServer() as running:
        yield running


def fetcher(**policy: object) -> ImageFetcher:
    fields: dict[str, object] = {"allow_networks": LOOPBACK_V4, "max_bytes": 1 << 20}
    fields.update(policy)
    return ImageFetcher(FetchPolicy(**fields))  # type: ignore[arg-type]


async def test_an_allowlisted_image_is_fetched_as_a_data_url(server: ImageServer) -> None:
    data_url = await fetcher().fetch(server.url("/image.png?w=20&h=10"))
    assert data_url.startswith("data:image/png;base64,")
    assert base64.b64decode(data_url.split(",", 1)[1]) == png_bytes(20, 10)


async def test_the_format_comes_from_the_bytes(server: ImageServer) -> None:
    assert (await fetcher().fetch(server.url("/image.jpg"))).startswith("data:image/jpeg;")
    assert (await fetcher().fetch(server.url("/image.gif"))).startswith("data:image/gif;")


async def test_loopback_is_refused_without_the_allowlist(server: ImageServer) -> None:
    with pytest.raises(ImageRefused, match="loopback"):
        await fetcher(allow_networks=()).fetch(server.url("/image.png"))
    assert all(path != "/never" for path, _ in server.requests)


async def test_the_resolved_address_is_pinned_and_the_name_kept(server: ImageServer) -> None:
    resolved: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"]

    pinned = ImageFetcher(fetcher().policy, resolver=resolve)
    await pinned.fetch(server.url("/image.png?pin", host="images.example"))
    assert resolved == ["images.example"]
    assert server.requests[-1] == ("/image.png", f"images.example:{server.port}")


async def test_a_host_with_any_refused_address_is_refused() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]

    with pytest.raises(ImageRefused, match=r"10\.0\.0\.7, a private address"):
        await ImageFetcher(FetchPolicy(), resolver=resolve).fetch("http://mixed.example/a.png")


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://10.0.0.1/cat.png", "private"),
        ("http://127.0.0.2:{port}/image.png", "loopback"),
        ("http://[::1]:{port}/image.png", "loopback"),
        ("http://[::ffff:127.0.0.2]:{port}/image.png", "loopback"),
        ("file:///etc/passwd", "only http and https"),
    ],
)
async def test_a_redirect_to_a_refused_address_is_refused(
    server: ImageServer, target: str, reason: str
) -> None:
    url = server.url("/redirect?to=" + target.format(port=server.port))
    with pytest.raises(ImageRefused, match=reason):
        await fetcher().fetch(url)


async def test_redirects_are_followed_and_bounded(server: ImageServer) -> None:
    hop = server.url("/redirect?to=" + server.url("/image.png"))
    assert (await fetcher().fetch(hop)).startswith("data:image/png;")
    with pytest.raises(ImageRefused, match="redirected more than 3 times"):
        await fetcher(max_redirects=3).fetch(server.url("/loop"))


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/big", "larger than the limit"),
        ("/big-chunked", "larger than the limit"),
        ("/text", "content type is 'text/plain'"),
        ("/missing", "HTTP 404"),
        ("/bomb.png", "pixels"),
        ("/image.png?w=300&h=300", "300x300 pixels"),
    ],
)
async def test_bodies_are_bounded(server: ImageServer, path: str, reason: str) -> None:
    with pytest.raises(ImageRefused, match=reason):
        await fetcher(max_pixels=256 * 256).fetch(server.url(path))


async def test_a_slow_server_times_out(server: ImageServer) -> None:
    with pytest.raises(ImageRefused, match=r"more than 0\.5 s"):
        await fetcher(timeout_s=0.5).fetch(server.url("/slow"))


# -- inlining into a request body -----------------------------------------------------------


def chat_body(*urls: str) -> bytes:
    content: list[dict[str, object]] = [{"type": "text", "text": "Describe."}]
    content += [{"type": "image_url", "image_url": {"url": u, "detail": "auto"}} for u in urls]
    return orjson.dumps(
        {"model": "demo-vl", "stream": True, "messages": [{"role": "user", "content": content}]}
    )


async def test_http_urls_are_inlined_and_the_rest_kept(server: ImageServer) -> None:
    settings = Settings(image_fetch_allow_networks=["127.0.0.1"])
    data = "data:image/gif;base64,R0lGODlhAQABAAAAACw="
    parsed = parse_request(chat_body(server.url("/image.png"), data), "chat")
    inlined = await inline_images(parsed, settings)
    body = orjson.loads(inlined.upstream_body)
    parts = body["messages"][0]["content"]
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[1]["image_url"]["detail"] == "auto"
    assert parts[2]["image_url"]["url"] == data
    assert body["stream_options"]["include_usage"] is True  # the gateway's metering option


async def test_each_refusal_names_its_part(server: ImageServer) -> None:
    parsed = parse_request(chat_body("data:,x", server.url("/image.png")), "chat")
    with pytest.raises(OpenAIError) as refused:
        await inline_images(parsed, Settings())
    assert refused.value.status_code == 400
    assert refused.value.param == "messages[0].content[2].image_url.url"
    assert "loopback" in refused.value.message


async def test_too_many_images_is_a_400() -> None:
    parsed = parse_request(chat_body(*["data:image/png;base64,AA=="] * 3), "chat")
    with pytest.raises(OpenAIError) as refused:
        await inline_images(parsed, Settings(image_max_per_request=2))
    assert refused.value.param == "messages[0].content[3].image_url.url"
    assert refused.value.code == "too_many_images"


async def test_a_body_without_remote_images_is_untouched() -> None:
    parsed = parse_request(chat_body("data:image/png;base64,AA=="), "chat")
    assert await inline_images(parsed, Settings()) is parsed


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "spelled",
    [b'"image_url"', b'"\\u0069mage_url"', b'"image\\u005furl"', b'"\\u0069\\u006d\\u0061ge_url"'],
)
async def test_an_image_part_is_found_however_its_keys_are_escaped(
    stream: bool, spelled: bytes
) -> None:
    """The shortcut that skips bodies without images must not skip one that spells
    ``image_url`` with JSON escapes (its URL would reach the replica unvetted)."""
    body = chat_body("http://127.0.0.1/image.png").replace(b'"image_url"', spelled)
    body = body if stream else body.replace(b'"stream":true', b'"stream":false')
    parsed = parse_request(body, "chat")
    with pytest.raises(OpenAIError) as refused:
        await inline_images(parsed, Settings())
    assert refused.value.param == "messages[0].content[1].image_url.url"
    assert "loopback" in refused.value.message
