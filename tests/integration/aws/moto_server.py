"""One moto server per test process, started on first use (``moto.server.ThreadedMotoServer``
on 127.0.0.1 with a free port), shared by the AWS contract backends, the AWS integration tests
and the AWS end-to-end test. Each user creates its own uniquely named resources.

Two corrections make moto behave like AWS where the code relies on it:

* moto's state manager is set so that ECS tasks stay ``RUNNING`` until ``StopTask`` (by
  default moto moves a described task straight on to ``STOPPED``);
* moto serves each request on its own thread and checks a condition, then acts, without a
  lock: two concurrent conditional ``PutItem`` calls can both succeed (a lost update), and two
  concurrent ``ReceiveMessage`` calls can lease the same message. DynamoDB and SQS do both
  atomically, so the moto backend's item writes are serialised, and so are receive / delete /
  change-visibility per queue (a long poll holds its queue's lock while it waits; sends do
  not take it, so the poll still wakes up).
"""

from __future__ import annotations

import atexit
import functools
import json
import threading
import urllib.request
import uuid
from collections import defaultdict
from typing import Any

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

from adapters.aws.settings import AwsSettings

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}

_lock = threading.Lock()
_endpoint: str | None = None


def endpoint() -> str:
    """The URL of the process's moto server, started now if it is not running yet."""
    global _endpoint
    with _lock:
        if _endpoint is None:
            _make_check_and_act_atomic()
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            host, port = server.get_host_and_port()
            url = f"http://{host}:{port}"
            _moto_api(
                url,
                "state-manager/set-transition",
                {
                    "model_name": "ecs::task",
                    "transition": {"progression": "manual", "times": 10**9},
                },
            )
            atexit.register(server.stop)
            _endpoint = url
        return _endpoint


def _locked(cls: Any, name: str, lock_for: Any) -> None:
    original = getattr(cls, name)

    @functools.wraps(original)
    def serialised(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock_for(*args, **kwargs):
            return original(self, *args, **kwargs)

    setattr(cls, name, serialised)


def _make_check_and_act_atomic() -> None:
    from moto.dynamodb.models import DynamoDBBackend
    from moto.sqs.models import SQSBackend

    items = threading.RLock()
    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        _locked(DynamoDBBackend, name, lambda *args, **kwargs: items)
    queues: defaultdict[str, threading.RLock] = defaultdict(threading.RLock)
    for name in ("receive_message", "delete_message", "change_message_visibility"):
        _locked(SQSBackend, name, lambda queue_name, *args, **kwargs: queues[queue_name])


def _moto_api(url: str, path: str, payload: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{url}/moto-api/{path}", data=json.dumps(payload).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


_session: Any = None


def client(service: str) -> Any:
    """A new boto3 client on the moto server with dummy credentials (from one shared session,
    which loads each service model once)."""
    global _session
    with _lock:
        if _session is None:
            _session = boto3.session.Session()
        session = _session
    return session.client(
        service,
        region_name=REGION,
        endpoint_url=endpoint(),
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=CREDENTIALS["AWS_SESSION_TOKEN"],
        config=Config(retries={"mode": "standard", "max_attempts": 3}, max_pool_connections=32),
    )


def unique(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:10]}"


def aws_settings(**overrides: Any) -> AwsSettings:
    """``AwsSettings`` pointing at the moto server (credentials come from ``CREDENTIALS``,
    which the caller puts into the environment)."""
    return AwsSettings(region=REGION, endpoint_url=endpoint(), **overrides)
