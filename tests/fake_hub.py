"""A fake Hugging Face Hub at the HTTP level: huggingface_hub's httpx2 clients are routed to an in-memory handler.

`FakeHub.install()` sets huggingface_hub's client factories to clients whose transport is an `httpx2.MockTransport`
calling `FakeHub.handle`, so nothing leaves the process. The fake keeps dataset repos (files by path, a commit log),
answers the endpoints `DatasetDict.push_to_hub` and `DatasetCard.push_to_hub` use (repo info, create, preupload,
commit, tree, paths-info, resolve, validate-yaml), checks the bearer token, and logs every request. Routes it does
not know answer 501 and are recorded in `unknown`, so a test sees what it missed.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FakeHub", "FakeRepo"]


@dataclass
class FakeRepo:
    """One dataset repo: its files and its commits (newest last)."""

    repo_id: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sha(self) -> str:
        """The head commit id (40 hex digits)."""
        return self.commits[-1]["oid"] if self.commits else "0" * 40


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Any:
    import httpx2

    return httpx2.Response(status, json=body, headers=headers or {})


class FakeHub:
    """The fake Hub; `token` is the one write token it accepts."""

    _xet_disabled_before = False

    def __init__(self, token: str = "hf_fake_test_token_123456", user: str = "tester") -> None:
        self.token = token
        self.user = user
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str]] = []
        self.unknown: list[tuple[str, str]] = []
        self.lfs: dict[str, bytes] = {}  # uploaded LFS objects by sha256
        self.refuse_commits_with: int | None = None  # an HTTP status every commit answers, e.g. 403

    # -- install ----------------------------------------------------------------------------------------------------
    def install(self) -> None:
        """Route huggingface_hub (and datasets through it) to this fake."""
        import httpx2
        from huggingface_hub import HfFileSystem, constants
        from huggingface_hub.utils import _http

        FakeHub._xet_disabled_before = constants.HF_HUB_DISABLE_XET

        def client() -> Any:
            return httpx2.Client(
                transport=httpx2.MockTransport(self.handle),
                event_hooks={"request": [_http.hf_request_event_hook]},
                follow_redirects=True,
            )

        def async_client() -> Any:
            async def handle(request: Any) -> Any:
                await request.aread()
                return self.handle(request)

            return httpx2.AsyncClient(transport=httpx2.MockTransport(handle), follow_redirects=True)

        HfFileSystem.clear_instance_cache()
        constants.HF_HUB_DISABLE_XET = True  # the fake speaks the LFS protocol; hf_xet has its own HTTP stack
        _http.set_client_factory(client)
        _http.set_async_client_factory(async_client)

    @staticmethod
    def uninstall() -> None:
        """Back to huggingface_hub's default clients."""
        from huggingface_hub import HfFileSystem, constants
        from huggingface_hub.utils import _http

        HfFileSystem.clear_instance_cache()
        constants.HF_HUB_DISABLE_XET = FakeHub._xet_disabled_before
        _http.set_client_factory(_http.default_client_factory)
        _http.set_async_client_factory(_http.default_async_client_factory)

    # -- the handler ------------------------------------------------------------------------------------------------
    def handle(self, request: Any) -> Any:
        """Answer one request."""
        method, path = request.method, request.url.path
        self.requests.append((method, path))
        public = path in ("/api/validate-yaml", "/api/agent-harnesses") or path.startswith("/fake-lfs/")
        if request.headers.get("authorization") != f"Bearer {self.token}" and not public:
            return _json(401, {"error": "Invalid credentials in Authorization header"})
        routes = [
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("GET", r"/api/whoami-v2", lambda r, m: _json(200, {"type": "user", "name": self.user})),
            (
                "GET",
                r"/api/agent-harnesses",
                lambda r, m: _json(200, {"standardEnvVars": [], "harnesses": {}}),
            ),
            ("POST", r"/api/repos/create", self._create),
            ("POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)", self._preupload),
            ("POST", r"/datasets/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch", self._lfs_batch),
            ("PUT", r"/fake-lfs/(?P<oid>[0-9a-f]{64})", self._lfs_put),
            ("POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)", self._commit),
            ("GET", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", self._tree),
            ("POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/paths-info/(?P<rev>[^/]+)", self._paths_info),
            ("GET", r"/api/datasets/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?", self._info),
            ("GET", r"/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self._resolve),
            ("HEAD", r"/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self._resolve),
        ]
        for verb, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if verb == method and match:
                return handler(request, match.groupdict())
        self.unknown.append((method, path))
        return _json(501, {"error": f"fake hub: no route for {method} {path}"})

    def _repo(self, groups: dict[str, Any]) -> FakeRepo | None:
        return self.repos.get(groups["repo"])

    @staticmethod
    def _not_found() -> Any:
        return _json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})

    def _validate_yaml(self, request: Any, groups: dict[str, Any]) -> Any:
        return _json(200, {"errors": [], "warnings": []})

    def _create(self, request: Any, groups: dict[str, Any]) -> Any:
        body = json.loads(request.content)
        repo_id = f"{body.get('organization') or self.user}/{body['name']}"
        if repo_id in self.repos:
            return _json(409, {"error": "You already created this dataset repo", "url": self._url(repo_id)})
        private = bool(body.get("private")) or body.get("visibility") == "private"
        self.repos[repo_id] = FakeRepo(repo_id, private)
        return _json(200, {"url": self._url(repo_id), "name": repo_id, "id": repo_id})

    @staticmethod
    def _url(repo_id: str) -> str:
        return f"https://huggingface.co/datasets/{repo_id}"

    def _info(self, request: Any, groups: dict[str, Any]) -> Any:
        repo = self._repo(groups)
        if repo is None:
            return self._not_found()
        return _json(
            200,
            {
                "id": repo.repo_id,
                "_id": repo.repo_id,
                "sha": repo.sha,
                "private": repo.private,
                "siblings": [{"rfilename": p} for p in sorted(repo.files)],
                "tags": [],
            },
        )

    def _preupload(self, request: Any, groups: dict[str, Any]) -> Any:
        if self._repo(groups) is None:
            return self._not_found()
        files = json.loads(request.content)["files"]
        modes = [
            {"path": f["path"], "uploadMode": self._mode(f["path"]), "shouldIgnore": False} for f in files
        ]
        return _json(200, {"files": modes})

    @staticmethod
    def _mode(path: str) -> str:
        return "lfs" if path.endswith(".parquet") else "regular"

    def _lfs_batch(self, request: Any, groups: dict[str, Any]) -> Any:
        if self._repo(groups) is None:
            return self._not_found()
        objects = json.loads(request.content)["objects"]
        answer = []
        for obj in objects:
            entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.lfs:
                entry["actions"] = {"upload": {"href": f"https://huggingface.co/fake-lfs/{obj['oid']}"}}
            answer.append(entry)
        return _json(200, {"transfer": "basic", "objects": answer})

    def _lfs_put(self, request: Any, groups: dict[str, Any]) -> Any:
        import httpx2

        content = request.content
        if hashlib.sha256(content).hexdigest() != groups["oid"]:
            return _json(400, {"error": "sha256 mismatch"})
        self.lfs[groups["oid"]] = content
        return httpx2.Response(200)

    def _commit(self, request: Any, groups: dict[str, Any]) -> Any:
        repo = self._repo(groups)
        if repo is None:
            return self._not_found()
        if self.refuse_commits_with:
            return _json(
                self.refuse_commits_with, {"error": "You don't have the rights to create a commit here"}
            )
        raw = request.content
        if request.headers.get("content-encoding") == "gzip":
            raw = gzip.decompress(raw)
        lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        header = next(item["value"] for item in lines if item["key"] == "header")
        parent = header.get("parentCommit")
        if parent is not None and parent != repo.sha:
            return _json(412, {"error": "parent commit is not the head"})
        added, deleted = [], []
        for item in lines:
            if item["key"] == "file":
                repo.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                added.append(item["value"]["path"])
            elif item["key"] == "lfsFile":
                oid = item["value"]["oid"]
                if oid not in self.lfs:
                    return _json(422, {"error": f"LFS object {oid} was never uploaded"})
                repo.files[item["value"]["path"]] = self.lfs[oid]
                added.append(item["value"]["path"])
            elif item["key"] == "deletedFile":
                repo.files.pop(item["value"]["path"], None)
                deleted.append(item["value"]["path"])
            elif item["key"] != "header":
                return _json(400, {"error": f"fake hub: unsupported commit operation {item['key']}"})
        oid = hashlib.sha1(f"{repo.sha}{header['summary']}{len(repo.commits)}".encode()).hexdigest()
        repo.commits.append({"oid": oid, "summary": header["summary"], "added": added, "deleted": deleted})
        return _json(
            200, {"commitUrl": f"{self._url(repo.repo_id)}/commit/{oid}", "commitOid": oid, "success": True}
        )

    def _entry(self, repo: FakeRepo, path: str) -> dict[str, Any]:
        content = repo.files[path]
        return {"type": "file", "path": path, "size": len(content), "oid": hashlib.sha1(content).hexdigest()}

    def _tree(self, request: Any, groups: dict[str, Any]) -> Any:
        repo = self._repo(groups)
        if repo is None:
            return self._not_found()
        base = (groups.get("path") or "").strip("/")
        recursive = request.url.params.get("recursive") in ("1", "true", "True")
        prefix = f"{base}/" if base else ""
        if base and base in repo.files:
            return _json(404, {"error": "not a folder"}, {"X-Error-Code": "EntryNotFound"})
        entries: dict[str, dict[str, Any]] = {}
        for path in sorted(repo.files):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :]
            if "/" in rest and not recursive:
                folder = prefix + rest.split("/")[0]
                entries[folder] = {"type": "directory", "path": folder, "oid": "d" * 40, "size": 0}
            else:
                entries[path] = self._entry(repo, path)
        if base and not entries:
            return _json(404, {"error": "no such folder"}, {"X-Error-Code": "EntryNotFound"})
        return _json(200, list(entries.values()))

    def _paths_info(self, request: Any, groups: dict[str, Any]) -> Any:
        repo = self._repo(groups)
        if repo is None:
            return self._not_found()
        form = dict(_parse_form(request.content.decode()))
        paths = form.get("paths", [])
        out = []
        for path in paths:
            if path in repo.files:
                out.append(self._entry(repo, path))
            elif any(p.startswith(path.rstrip("/") + "/") for p in repo.files):
                out.append({"type": "directory", "path": path, "oid": "d" * 40, "size": 0})
        return _json(200, out)

    def _resolve(self, request: Any, groups: dict[str, Any]) -> Any:
        import httpx2

        repo = self._repo(groups)
        if repo is None:
            return self._not_found()
        content = repo.files.get(groups["path"])
        if content is None:
            return _json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
        headers = {
            "x-repo-commit": repo.sha,
            "etag": f'"{hashlib.sha1(content).hexdigest()}"',
            "content-length": str(len(content)),
        }
        return httpx2.Response(200, content=b"" if request.method == "HEAD" else content, headers=headers)


def _parse_form(body: str) -> list[tuple[str, Any]]:
    from urllib.parse import parse_qs

    if body.lstrip().startswith("{"):
        data = json.loads(body)
        return [(k, v if isinstance(v, list) else [v]) for k, v in data.items()]
    return list(parse_qs(body).items())
