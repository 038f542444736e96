"""An in-memory Hub: just enough of the Hub's HTTP API, served through huggingface_hub's own client factory
(httpx2.MockTransport), for the real push and download code paths to run with no network."""

import base64
import hashlib
import json

import httpx2


class LocalHub:
    """Just enough of the Hub's HTTP API for huggingface_hub to create a repo, commit files and download them."""

    def __init__(self):
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits = 0

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        path, method = request.url.path, request.method
        if path == "/api/agent-harnesses":
            return httpx2.Response(200, json={"standardEnvVars": [], "harnesses": {}})
        if path == "/api/repos/create":
            body = json.loads(request.content)
            repo = f"{body.get('organization') or 'user'}/{body['name']}" if "/" not in body["name"] else body["name"]
            self.repos.setdefault(repo, {})
            return httpx2.Response(200, json={"url": f"https://huggingface.co/{repo}", "name": repo})
        if path == "/api/validate-yaml":
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        parts = path.strip("/").split("/")
        if parts[0] == "api" and parts[1] in ("models", "datasets"):
            repo = "/".join(parts[2:4])
            if parts[4] == "preupload":
                files = json.loads(request.content)["files"]
                return httpx2.Response(
                    200,
                    json={
                        "files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                    },
                )
            if parts[4] == "commit":
                for line in request.content.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        self.repos[repo][item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                self.commits += 1
                oid = hashlib.sha1(str(self.commits).encode()).hexdigest()
                return httpx2.Response(
                    200,
                    json={
                        "commitUrl": f"https://huggingface.co/{repo}/commit/{oid}",
                        "commitOid": oid,
                        "success": True,
                    },
                )
            if parts[4] == "tree":
                return httpx2.Response(
                    200,
                    json=[
                        {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                        for name, data in self.repos.get(repo, {}).items()
                    ],
                )
            if parts[4] == "revision":
                files = self.repos.get(repo)
                if files is None:
                    return httpx2.Response(404, headers={"x-error-code": "RepoNotFound"}, json={"error": "not found"})
                return httpx2.Response(
                    200, json={"id": repo, "sha": "a" * 40, "siblings": [{"rfilename": name} for name in files]}
                )
        if "resolve" in parts:
            at = parts.index("resolve")
            repo = "/".join(p for p in parts[:at] if p not in ("datasets",))
            name = "/".join(parts[at + 2 :])
            content = self.repos.get(repo, {}).get(name)
            if content is None:
                return httpx2.Response(404, headers={"x-error-code": "EntryNotFound"})
            headers = {
                "x-repo-commit": "a" * 40,
                "etag": f'"{hashlib.sha1(content).hexdigest()}"',
                "content-length": str(len(content)),
            }
            return httpx2.Response(200, headers=headers, content=b"" if method == "HEAD" else content)
        return httpx2.Response(404, json={"error": f"LocalHub does not serve {method} {path}"})


def serve(tmp_path, monkeypatch):
    """Yield a fresh :class:`LocalHub` that huggingface_hub talks to until the test ends (own cache, a token)."""
    import huggingface_hub

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # huggingface_hub reads HF_HOME once, at import; an earlier test may have imported it, so its cache paths
    # are set here too (otherwise downloads land in, and are served from, the user's real cache).
    from huggingface_hub import constants

    for name, folder in (
        ("HF_HOME", "hf"),
        ("HF_HUB_CACHE", "hf/hub"),
        ("HUGGINGFACE_HUB_CACHE", "hf/hub"),
        ("HF_ASSETS_CACHE", "hf/assets"),
        ("HF_XET_CACHE", "hf/xet"),
        ("HF_TOKEN_PATH", "hf/token"),
        ("HF_STORED_TOKENS_PATH", "hf/stored_tokens"),
    ):
        monkeypatch.setattr(constants, name, str(tmp_path / folder))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    hub = LocalHub()
    huggingface_hub.set_client_factory(
        lambda: httpx2.Client(transport=httpx2.MockTransport(hub), follow_redirects=True)
    )
    yield hub
    huggingface_hub.set_client_factory(huggingface_hub.utils._http.default_client_factory)
