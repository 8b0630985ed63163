"""Fakes of the Google services that have no emulator here, at the SDK's boundary.

``FakeGcsServer``
    The Cloud Storage JSON API over HTTP on 127.0.0.1, for the real ``google-cloud-storage``
    client (``client_options={"api_endpoint": server.url}``) -- and for engine subprocesses,
    which reach it through ``SKYCRAWL_GCP_STORAGE_EMULATOR_HOST``. Implemented: bucket create
    and get; object multipart and resumable upload, media download (with ``x-goog-hash``),
    metadata get, list (``prefix``, ``pageToken``, ``maxResults``), delete; ``Range: bytes=a-b``
    on downloads (206); bucket IAM policies (``getIamPolicy`` / ``setIamPolicy``, stored as
    given, version 3 with conditions, an etag that a stale write gets 412 for -- the policies
    are stored, never enforced: ``gcp_iam_eval`` evaluates them). Limits: no ACLs,
    preconditions (``ifGenerationMatch`` is ignored), versioning, ``delimiter``, batch
    requests, compose, copy or rewrite; objects live in memory; no authentication.

``FakeCloudRun`` (``fake_cloud_run.py``) and ``FakeCloudTasks`` (``fake_cloud_tasks.py``) are
the two other fakes; their limits are in their own docstrings.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import google_crc32c


@dataclass
class StoredObject:
    data: bytes
    content_type: str
    generation: int

    def resource(self, bucket: str, name: str) -> dict[str, Any]:
        crc = base64.b64encode(google_crc32c.Checksum(self.data).digest()).decode()
        md5 = base64.b64encode(hashlib.md5(self.data).digest()).decode()
        return {
            "kind": "storage#object",
            "id": f"{bucket}/{name}/{self.generation}",
            "name": name,
            "bucket": bucket,
            "generation": str(self.generation),
            "metageneration": "1",
            "contentType": self.content_type,
            "size": str(len(self.data)),
            "crc32c": crc,
            "md5Hash": md5,
        }


@dataclass
class FakeGcsState:
    buckets: dict[str, dict[str, StoredObject]] = field(default_factory=dict)
    uploads: dict[str, tuple[str, str, str, bytearray]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    generation: int = 0
    requests: int = 0
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)  # bucket -> IAM policy


class _Handler(BaseHTTPRequestHandler):
    server: _GcsHttpServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # ---------------------------------------------------------------- plumbing

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self,
        status: int,
        payload: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        body = (
            raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
        )
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if raw is None and payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": {"code": status, "message": message, "errors": []}})

    def _route(self, method: str) -> None:
        state = self.server.state
        with state.lock:
            state.requests += 1
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        for pattern, handler in self.server.routes:
            match = re.fullmatch(pattern, f"{method} {path}")
            if match:
                handler(self, query, *(unquote(g) for g in match.groups()))
                return
        self._error(404, f"no route for {method} {path}")

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    # ---------------------------------------------------------------- buckets

    def create_bucket(self, query: dict[str, str]) -> None:
        name = json.loads(self._body())["name"]
        with self.server.state.lock:
            if name in self.server.state.buckets:
                self._error(409, "bucket exists")
                return
            self.server.state.buckets[name] = {}
        self._send(200, {"kind": "storage#bucket", "name": name, "id": name})

    def get_bucket(self, query: dict[str, str], bucket: str) -> None:
        if bucket not in self.server.state.buckets:
            self._error(404, "no such bucket")
            return
        self._send(200, {"kind": "storage#bucket", "name": bucket, "id": bucket})

    def get_bucket_iam(self, query: dict[str, str], bucket: str) -> None:
        if bucket not in self.server.state.buckets:
            self._error(404, "no such bucket")
            return
        with self.server.state.lock:
            policy = self.server.state.policies.get(bucket, {"version": 1, "etag": "CAE="})
        self._send(
            200, {"kind": "storage#policy", "resourceId": f"projects/_/buckets/{bucket}", **policy}
        )

    def set_bucket_iam(self, query: dict[str, str], bucket: str) -> None:
        if bucket not in self.server.state.buckets:
            self._error(404, "no such bucket")
            return
        body = json.loads(self._body())
        state = self.server.state
        with state.lock:
            current = state.policies.get(bucket, {"etag": "CAE="})
            if body.get("etag") and body["etag"] != current["etag"]:
                self._error(412, "the policy changed: read it again")
                return
            state.generation += 1
            stored = {
                "version": int(body.get("version", 1)),
                "bindings": body.get("bindings", []),
                "etag": base64.b64encode(f"p{state.generation}".encode()).decode(),
            }
            state.policies[bucket] = stored
        self._send(200, {"kind": "storage#policy", **stored})

    # ---------------------------------------------------------------- objects

    def _objects(self, bucket: str) -> dict[str, StoredObject] | None:
        objects = self.server.state.buckets.get(bucket)
        if objects is None:
            self._error(404, f"no such bucket {bucket}")
        return objects

    def _store(self, bucket: str, name: str, data: bytes, content_type: str) -> None:
        state = self.server.state
        with state.lock:
            objects = state.buckets.get(bucket)
            if objects is None:
                self._error(404, f"no such bucket {bucket}")
                return
            state.generation += 1
            stored = StoredObject(bytes(data), content_type, state.generation)
            objects[name] = stored  # one assignment: readers see the old or the new object
        self._send(200, stored.resource(bucket, name))

    def upload(self, query: dict[str, str], bucket: str) -> None:
        kind = query.get("uploadType", "media")
        body = self._body()
        if kind == "media":
            content_type = self.headers.get("Content-Type", "application/octet-stream")
            self._store(bucket, query["name"], body, content_type)
        elif kind == "multipart":
            metadata, content_type, data = _split_multipart(self.headers["Content-Type"], body)
            self._store(bucket, metadata["name"], data, metadata.get("contentType", content_type))
        elif kind == "resumable":
            metadata = json.loads(body or b"{}")
            name = metadata.get("name") or query["name"]
            content_type = self.headers.get("X-Upload-Content-Type") or metadata.get(
                "contentType", "application/octet-stream"
            )
            upload_id = uuid.uuid4().hex
            self.server.state.uploads[upload_id] = (bucket, name, content_type, bytearray())
            location = f"{self.server.url}/upload/storage/v1/b/{quote(bucket)}/o?uploadType=resumable&upload_id={upload_id}"
            self._send(200, raw=b"", headers={"Location": location})
        else:
            self._error(400, f"unsupported uploadType {kind}")

    def upload_chunk(self, query: dict[str, str], bucket: str) -> None:
        upload = self.server.state.uploads.get(query.get("upload_id", ""))
        if upload is None:
            self._error(404, "no such upload")
            return
        _, name, content_type, buffer = upload
        buffer += self._body()
        total = re.search(r"/(\d+|\*)$", self.headers.get("Content-Range", "bytes */*"))
        if total is None or total.group(1) == "*" or int(total.group(1)) > len(buffer):
            self._send(308, raw=b"", headers={"Range": f"bytes=0-{len(buffer) - 1}"})
            return
        del self.server.state.uploads[query["upload_id"]]
        self._store(bucket, name, bytes(buffer), content_type)

    def download(self, query: dict[str, str], bucket: str, name: str) -> None:
        objects = self._objects(bucket)
        if objects is None:
            return
        stored = objects.get(name)
        if stored is None:
            self._error(404, f"no such object {name}")
            return
        resource = stored.resource(bucket, name)
        headers = {
            "Content-Type": stored.content_type,
            "x-goog-hash": f"crc32c={resource['crc32c']},md5={resource['md5Hash']}",
            "x-goog-generation": str(stored.generation),
            "x-goog-stored-content-length": str(len(stored.data)),
        }
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("range") or "")
        if ranged is not None:  # as Cloud Storage answers a Range request: 206, that slice
            first = int(ranged.group(1))
            last = int(ranged.group(2)) if ranged.group(2) else len(stored.data) - 1
            part = stored.data[first : last + 1]
            headers["Content-Range"] = f"bytes {first}-{first + len(part) - 1}/{len(stored.data)}"
            self._send(206, raw=part, headers=headers)
            return
        self._send(200, raw=stored.data, headers=headers)

    def get_object(self, query: dict[str, str], bucket: str, name: str) -> None:
        if query.get("alt") == "media":
            self.download(query, bucket, name)
            return
        objects = self._objects(bucket)
        if objects is None:
            return
        stored = objects.get(name)
        if stored is None:
            self._error(404, f"no such object {name}")
            return
        self._send(200, stored.resource(bucket, name))

    def list_objects(self, query: dict[str, str], bucket: str) -> None:
        objects = self._objects(bucket)
        if objects is None:
            return
        prefix, start = query.get("prefix", ""), query.get("pageToken", "")
        size = int(query.get("maxResults", "1000"))
        with self.server.state.lock:
            names = sorted(n for n in objects if n.startswith(prefix) and n > start)
            items = [objects[n].resource(bucket, n) for n in names[:size]]
        payload: dict[str, Any] = {"kind": "storage#objects", "items": items}
        if len(names) > size:
            payload["nextPageToken"] = names[size - 1]
        self._send(200, payload)

    def delete_object(self, query: dict[str, str], bucket: str, name: str) -> None:
        with self.server.state.lock:
            objects = self.server.state.buckets.get(bucket, {})
            found = objects.pop(name, None)
        if found is None:
            self._error(404, f"no such object {name}")
        else:
            self._send(204, raw=b"")


def _split_multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], str, bytes]:
    boundary = re.search(r'boundary="?([^";]+)"?', content_type)
    if boundary is None:
        raise ValueError("multipart upload without boundary")
    marker = b"--" + boundary.group(1).encode()
    parts = [p for p in body.split(marker) if p not in (b"", b"--", b"--\r\n", b"\r\n")]
    _, _, meta_body = parts[0].partition(b"\r\n\r\n")
    media_head, _, media = parts[1].partition(b"\r\n\r\n")
    media_type = re.search(rb"content-type:\s*([^\r\n]+)", media_head, re.IGNORECASE)
    kind = media_type.group(1).decode() if media_type else "application/octet-stream"
    return json.loads(meta_body.strip()), kind, media[:-2] if media.endswith(b"\r\n") else media


class _GcsHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    state: FakeGcsState
    url: str
    routes: list[tuple[str, Any]]


_ROUTES: list[tuple[str, Any]] = [
    (r"POST /storage/v1/b", _Handler.create_bucket),
    (r"GET /storage/v1/b/([^/]+)", _Handler.get_bucket),
    (r"GET /storage/v1/b/([^/]+)/iam", _Handler.get_bucket_iam),
    (r"PUT /storage/v1/b/([^/]+)/iam", _Handler.set_bucket_iam),
    (r"POST /upload/storage/v1/b/([^/]+)/o", _Handler.upload),
    (r"PUT /upload/storage/v1/b/([^/]+)/o", _Handler.upload_chunk),
    (r"GET /download/storage/v1/b/([^/]+)/o/(.+)", _Handler.download),
    (r"GET /storage/v1/b/([^/]+)/o", _Handler.list_objects),
    (r"GET /storage/v1/b/([^/]+)/o/(.+)", _Handler.get_object),
    (r"DELETE /storage/v1/b/([^/]+)/o/(.+)", _Handler.delete_object),
]


class FakeGcsServer:
    """The fake Cloud Storage server; ``with FakeGcsServer(buckets=[...]) as server:``."""

    def __init__(self, *, buckets: list[str] | None = None) -> None:
        self.state = FakeGcsState(buckets={name: {} for name in buckets or []})
        self._server = _GcsHttpServer(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._server.state, self._server.url, self._server.routes = self.state, self.url, _ROUTES
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    def __enter__(self) -> FakeGcsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def client(self, project: str = "skycrawl-test") -> Any:
        """A real ``storage.Client`` talking to this server."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=project,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.url},
        )
