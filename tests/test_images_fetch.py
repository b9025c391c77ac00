"""Fetching http(s) image URLs (IMAGE_FETCH_HOSTS): the allow-list, one resolution refused unless every address is
public, the connection pinned to that address, no redirects, the byte cap read as a stream, the Content-Type and
the timeout; every failure a 400 naming the part. HTTP is faked with `responses`, DNS with a fake getaddrinfo."""
import io
import socket

import pytest
import requests
from responses import matchers

from app.images import fetch
from app.images.fetch import CHUNK_BYTES, ImageFetcher, PinnedNameAdapter, is_public
from app.images.parts import ImageError, ImageUrl
from app.images.rules import ImageRules
from tests.fakes import MODEL, VICUNA
from tests.image_samples import b64, data_url, image_bytes, image_part

HOST = "images.example.com"
PUBLIC = "93.184.216.34"
PINNED = f"http://{PUBLIC}:80/cat.png"
PNG = image_bytes("image/png")
RULES = ImageRules(fetch_hosts=(HOST,), fetch_timeout=2.0)


class Resolver:
    """getaddrinfo answering `addresses` for any name; records the names asked."""

    def __init__(self, *addresses: str):
        self.addresses = addresses
        self.asked: list[str] = []

    def __call__(self, host, port, *args, **kwargs):
        self.asked.append(host)
        if not self.addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in self.addresses]


class EndlessBody(io.BufferedReader):
    """A response body that never ends, counting what was read from it."""

    def __init__(self):
        super().__init__(io.BytesIO(b""))
        self.read_bytes = 0

    def read(self, size=-1):
        size = CHUNK_BYTES if size is None or size < 0 else size
        self.read_bytes += size
        return b"\0" * size

    def read1(self, size=-1):
        return self.read(size)

    def readinto(self, buffer):
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def fetched(url=f"http://{HOST}/cat.png", rules=RULES, resolver=None, max_bytes=None):
    fetcher = ImageFetcher(rules, resolver or Resolver(PUBLIC))
    return fetcher.fetch(ImageUrl(url, "messages[0].content[1]"), rules.max_bytes if max_bytes is None else max_bytes)


def refused(**kwargs) -> ImageError:
    with pytest.raises(ImageError) as caught:
        fetched(**kwargs)
    return caught.value


class TestTheHappyPath:
    def test_the_image_is_fetched_from_the_resolved_address_with_the_urls_host_header(self, upstream):
        upstream.get(PINNED, body=PNG, content_type="image/png",
                     match=[matchers.header_matcher({"Host": HOST, "Accept-Encoding": "identity"})])
        resolver = Resolver(PUBLIC)
        image = fetched(resolver=resolver)
        assert (image.media_type, image.data, image.param) == ("image/png", PNG, "messages[0].content[1]")
        assert resolver.asked == [HOST]  # resolved once, and the connection went to that address

    def test_port_path_and_query_are_kept_and_the_fragment_dropped(self, upstream):
        upstream.get(f"http://{PUBLIC}:8080/a/b.png?sig=1", body=PNG, content_type="image/png",
                     match=[matchers.header_matcher({"Host": f"{HOST}:8080"})])
        assert fetched(url=f"http://{HOST}:8080/a/b.png?sig=1#top").data == PNG

    def test_an_ipv6_address_is_bracketed(self, upstream):
        upstream.get("https://[2606:2800:220:1::1]:443/cat.png", body=PNG, content_type="image/png")
        assert fetched(url=f"https://{HOST}/cat.png", resolver=Resolver("2606:2800:220:1::1")).data == PNG

    def test_https_sends_sni_and_checks_the_certificate_for_the_name_not_the_address(self):
        adapter = PinnedNameAdapter(HOST)
        request = requests.Request("GET", f"https://{PUBLIC}:443/cat.png").prepare()
        host_params, pool_kwargs = adapter.build_connection_pool_key_attributes(request, True)
        assert host_params["host"] == PUBLIC
        assert (pool_kwargs["server_hostname"], pool_kwargs["assert_hostname"]) == (HOST, HOST)
        assert pool_kwargs["cert_reqs"] == "CERT_REQUIRED"

    def test_no_proxy_from_the_environment_is_used(self, upstream, monkeypatch):
        monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
        monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
        upstream.get(PINNED, body=PNG, content_type="image/png")
        assert fetched().data == PNG
        sent = upstream.calls[0].request.req_kwargs  # what requests handed its adapter
        assert not any(sent["proxies"].values())
        assert (sent["stream"], sent["timeout"]) == (True, (2.0, 2.0))

    def test_the_fetched_bytes_are_checked_like_a_data_url(self, upstream):
        upstream.get(PINNED, body=b"<html>not an image</html>", content_type="image/png")
        error = refused()
        assert (error.code, error.message) == ("invalid_image_format", "The image data is not a valid image/png "
                                                                       "image.")


class TestAddresses:
    @pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "::1",
                                         "169.254.169.254", "fe80::1", "100.64.0.1", "0.0.0.0", "224.0.0.1",
                                         "240.0.0.1", "::ffff:127.0.0.1", "fc00::1", "ff02::1"])
    def test_a_name_resolving_to_a_non_public_address_is_refused_before_connecting(self, upstream, address):
        error = refused(resolver=Resolver(address))
        assert error.code == "invalid_image_url"
        assert error.message == (f"The image host {HOST} resolves to an address that is not public; images are "
                                 "only fetched from public addresses.")
        assert not upstream.calls

    def test_one_private_address_among_public_ones_is_refused(self, upstream):
        assert "not public" in refused(resolver=Resolver(PUBLIC, "127.0.0.1")).message
        assert not upstream.calls

    def test_allow_private_lets_a_trusted_network_fetch_from_its_own_addresses(self, upstream):
        upstream.get("http://10.0.0.5:80/cat.png", body=PNG, content_type="image/png",
                     match=[matchers.header_matcher({"Host": HOST})])
        rules = ImageRules(fetch_hosts=(HOST,), allow_private=True)
        assert fetched(rules=rules, resolver=Resolver("10.0.0.5")).data == PNG

    def test_a_name_that_does_not_resolve(self):
        assert refused(resolver=Resolver()).message == f"The image host {HOST} could not be resolved."

    @pytest.mark.parametrize("address, public", [(PUBLIC, True), ("2606:2800:220:1::1", True),
                                                 ("127.0.0.1", False), ("::ffff:10.0.0.1", False),
                                                 ("::ffff:93.184.216.34", True)])
    def test_is_public(self, address, public):
        assert is_public(address) is public


class TestResponses:
    @pytest.mark.parametrize("location", ["http://127.0.0.1/admin", f"http://{HOST}/other.png"])
    @pytest.mark.parametrize("status", [301, 302, 307, 308])
    def test_a_redirect_is_refused_and_not_followed(self, upstream, status, location):
        upstream.get(PINNED, status=status, headers={"Location": location})
        error = refused()
        assert error.code == "invalid_image_url"
        assert error.message == (f"The image URL at {HOST} answered with a redirect (HTTP {status}); redirects are "
                                 "not followed: give the image's own URL.")
        assert len(upstream.calls) == 1

    def test_an_http_error_status(self, upstream):
        upstream.get(PINNED, status=404, body=b"gone")
        assert refused().message == f"The image URL at {HOST} answered HTTP 404."

    @pytest.mark.parametrize("content_type", ["text/html", "image/svg+xml", "application/octet-stream", None])
    def test_a_content_type_that_is_not_an_accepted_image_type(self, upstream, content_type):
        upstream.get(PINNED, body=PNG, content_type=content_type)
        error = refused()
        assert error.code == "invalid_image_url"
        assert "not one of image/png, image/jpeg, image/webp, image/gif" in error.message

    def test_a_content_type_with_parameters_is_fine(self, upstream):
        upstream.get(PINNED, body=PNG, content_type="Image/PNG; charset=binary")
        assert fetched().media_type == "image/png"

    def test_a_compressed_body_is_refused(self, upstream):
        upstream.get(PINNED, body=PNG, content_type="image/png", headers={"Content-Encoding": "gzip"})
        assert "compressed body" in refused().message

    def test_an_announced_length_over_the_cap_is_refused_without_reading(self, upstream):
        body = EndlessBody()
        upstream.get(PINNED, body=body, content_type="image/png", headers={"Content-Length": "5000000"},
                     auto_calculate_content_length=False)
        error = refused(max_bytes=1000)
        assert (error.code, error.message) == ("image_too_large", f"The image at {HOST} is larger than the 1000 "
                                                                  "bytes allowed.")
        assert body.read_bytes == 0

    def test_a_body_past_the_cap_stops_being_read(self, upstream):
        body = EndlessBody()
        upstream.get(PINNED, body=body, content_type="image/png")
        assert refused(max_bytes=3 * CHUNK_BYTES).code == "image_too_large"
        assert 3 * CHUNK_BYTES < body.read_bytes <= 5 * CHUNK_BYTES

    @pytest.mark.parametrize("failure", [requests.ConnectTimeout(), requests.ReadTimeout()])
    def test_a_timeout_is_the_urls_problem(self, upstream, failure):
        upstream.get(PINNED, body=failure)
        assert refused().message == f"The image at {HOST} did not arrive within 2 s."

    def test_a_download_slower_than_the_deadline_is_cut(self, upstream, monkeypatch):
        body = EndlessBody()
        upstream.get(PINNED, body=body, content_type="image/png")
        ticks = iter(range(0, 1000))
        monkeypatch.setattr(fetch.time, "monotonic", lambda: float(next(ticks)))  # a second per read
        assert refused().message == f"The image at {HOST} did not arrive within 2 s."
        assert body.read_bytes <= 3 * CHUNK_BYTES

    def test_an_unreachable_host(self, upstream):
        upstream.get(PINNED, body=requests.ConnectionError("refused"))
        assert refused().message == f"The image at {HOST} could not be fetched (connection failed)."


class TestHosts:
    @pytest.mark.parametrize("hosts, host, allowed", [
        ((HOST,), HOST, True), ((HOST,), "evil.example.com", False), ((HOST,), f"x.{HOST}", False),
        (("*.example.com",), HOST, True), (("*.example.com",), "example.com", False),
        (("*.example.com",), "badexample.com", False), (("*",), "anything.test", True), ((), HOST, False)])
    def test_the_allow_list(self, hosts, host, allowed):
        assert ImageRules(fetch_hosts=hosts).host_allowed(host) is allowed

    @pytest.mark.parametrize("value", ["http://x.test", "x.test/path", "*x.test", "a.*.test", "user@x.test"])
    def test_the_setting_refuses_what_is_not_a_host_name(self, value):
        from app.config import ConfigError, load_config

        with pytest.raises(ConfigError, match="IMAGE_FETCH_HOSTS"):
            load_config({"IMAGE_FETCH_HOSTS": value})

    def test_the_setting_lowercases(self):
        from app.config import load_config

        assert load_config({"IMAGE_FETCH_HOSTS": "Images.Example.com, *.CDN.test"})["IMAGE_FETCH_HOSTS"] == \
            ("images.example.com", "*.cdn.test")


# --- through the API --------------------------------------------------------------------------------------------

CHAT = "/v1/chat/completions"


@pytest.fixture
def fetching(config, monkeypatch):
    """An app that fetches from HOST, which resolves to PUBLIC."""
    from app import create_app

    config["IMAGE_FETCH_HOSTS"] = (HOST,)
    resolver = Resolver(PUBLIC)
    monkeypatch.setattr(fetch.socket, "getaddrinfo", resolver)
    return create_app(config, environ={}).test_client()


def ask(client, *parts, model=MODEL):
    return client.post(CHAT, json={"model": model, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "what?"}, *parts]}]})


def test_a_fetched_image_reaches_the_worker_as_base64_with_the_exact_prompt(fetching, cluster, upstream):
    cluster.multimodal(MODEL)
    cluster.chat_ready(counted=False)
    upstream.get(PINNED, body=PNG, content_type="image/png", match=[matchers.header_matcher({"Host": HOST})])
    cluster.generates(payload={
        "model": MODEL, "prompt": f"{VICUNA['system_message']} USER: $$<image>$$<image>\nwhat? ASSISTANT:",
        "temperature": 1.0, "logprobs": None, "top_p": 1.0, "top_k": -1, "presence_penalty": 0.0,
        "frequency_penalty": 0.0, "max_new_tokens": 8, "echo": False, "stop_token_ids": None,
        "images": [b64(PNG)], "stop": []})
    response = fetching.post(CHAT, json={"model": MODEL, "max_tokens": 8, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "what?"},
                                     {"type": "image_url", "image_url": f"http://{HOST}/cat.png"}]}]})
    assert response.status_code == 200, response.get_json()


def test_a_model_that_is_not_multimodal_is_refused_before_anything_is_fetched(fetching, cluster, upstream):
    cluster.multimodal("llava")
    cluster.serves(MODEL)
    body = ask(fetching, image_part(f"http://{HOST}/cat.png")).get_json()["error"]
    assert body["param"] == "messages[0].content[1]" and "does not accept image input" in body["message"]
    assert fetch.socket.getaddrinfo.asked == []
    assert not [call for call in upstream.calls if PUBLIC in call.request.url]


def test_a_fetch_failure_is_400_naming_the_part(fetching, cluster, upstream):
    cluster.multimodal(MODEL)
    upstream.get(PINNED, status=302, headers={"Location": "http://169.254.169.254/latest/meta-data"})
    response = ask(fetching, image_part(data_url()), image_part(f"http://{HOST}/cat.png"))
    assert response.status_code == 400
    body = response.get_json()["error"]
    assert (body["param"], body["code"]) == ("messages[0].content[2]", "invalid_image_url")
    assert "redirects are not followed" in body["message"]


def test_a_host_that_is_not_allowed_is_refused_at_validation(fetching):
    body = ask(fetching, image_part("http://evil.example.com/cat.png")).get_json()["error"]
    assert (body["param"], body["code"]) == ("messages[0].content[1]", "invalid_image_url")
    assert body["message"].endswith("Images are not fetched from evil.example.com: the gateway's IMAGE_FETCH_HOSTS "
                                    "does not list it.")


@pytest.mark.parametrize("url, text", [("file:///etc/passwd", "never read"), ("/etc/passwd", "never read"),
                                       ("http://user:pw@images.example.com/x.png", "credentials"),
                                       ("http://images.example.com:99999/x.png", "invalid port")])
def test_with_fetching_on_other_urls_are_still_refused(fetching, url, text):
    body = ask(fetching, image_part(url)).get_json()["error"]
    assert body["param"] == "messages[0].content[1]" and text in body["message"]


def test_fetched_bytes_count_toward_the_body_limit(config, cluster, upstream, monkeypatch):
    from app import create_app

    config.update(IMAGE_FETCH_HOSTS=(HOST,), MAX_REQUEST_BODY_BYTES=400)
    monkeypatch.setattr(fetch.socket, "getaddrinfo", Resolver(PUBLIC))
    cluster.multimodal(MODEL)
    upstream.get(PINNED, body=image_bytes(size=(64, 64), color="blue") + b"\0" * 400, content_type="image/png")
    response = ask(create_app(config, environ={}).test_client(), image_part(f"http://{HOST}/cat.png"))
    body = response.get_json()["error"]
    assert (response.status_code, body["code"], body["param"]) == (400, "image_too_large", "messages[0].content[1]")
    assert "may not exceed 400 bytes together (MAX_REQUEST_BODY_BYTES)" in body["message"]
