"""resources._lib.named.or_name: the kinds whose path (or filename) defaults to the name take
the value from the param when it is set, else from the name, and an error names the key the
value came from."""

from __future__ import annotations

import pytest

from engine.errors import ValidationError
from engine.resource import Resource
from resources._lib.named import or_name
from resources.deploy_tar import DeployTarRes
from resources.file import FileRes
from resources.gzip import GzipRes
from resources.http_server import HTTPServerFileRes, HTTPServerFlagRes
from resources.http_server_proxy import HTTPServerProxyRes
from resources.http_server_ui import HTTPServerUIRes
from resources.tar import TarRes
from resources.tftp import TFTPFileRes

PROXY = {"head": "http://127.0.0.1:1/"}
KINDS: dict[str, tuple[type[Resource], str, str, str, dict[str, str]]] = {
    # kind: its class, the param, a good value, a bad one, other params it needs
    "file": (FileRes, "path", "/srv/f", "relative", {}),
    "gzip": (GzipRes, "path", "/srv/f.gz", "relative", {}),
    "tar": (TarRes, "path", "/srv/f.tar", "relative", {}),
    "deploy:tar": (DeployTarRes, "path", "/srv/d.tar", "relative", {}),
    "http:server:file": (HTTPServerFileRes, "filename", "/f", "relative", {}),
    "http:server:flag": (HTTPServerFlagRes, "path", "/flag", "relative", {}),
    "http:server:proxy": (HTTPServerProxyRes, "path", "/p/", "relative", PROXY),
    "http:server:ui": (HTTPServerUIRes, "path", "/ui/", "/no-slash-at-the-end", {}),
    "tftp:file": (TFTPFileRes, "filename", "f", "/", {}),
}


@pytest.mark.parametrize("kind", KINDS)
def test_the_param_else_the_name_and_errors_name_the_key(kind: str) -> None:
    cls, param, good, bad, more = KINDS[kind]
    assert or_name(cls(name=good, **more), param) == (good, "name")
    assert or_name(cls(name=bad, **{param: good}, **more), param) == (good, param)
    cls(name=bad, **{param: good}, **more).validate()  # the param is what counts
    with pytest.raises(ValidationError) as by_name:
        cls(name=bad, **more).validate()
    assert by_name.value.key == "name" and repr(bad) in str(by_name.value)
    with pytest.raises(ValidationError) as by_param:
        cls(name=good, **{param: bad}, **more).validate()
    assert by_param.value.key == param and repr(bad) in str(by_param.value)
