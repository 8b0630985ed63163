"""``skycrawl up`` with two egresses, one through local forward proxies: crawls spread over
both, a failing proxy is scored out and avoided, a session keeps its proxy across
containers, and ``skycrawl status`` shows where each container runs and leaves from."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.egress_scoring import proxy_id
from tests.e2e.cli_support import run_cli, skycrawl_up
from tests.e2e.forward_proxy import ForwardProxy
from tests.e2e.support import serve_site

pytestmark = pytest.mark.e2e

OPERATOR = "op_e2e_egress_operator_key_0123456789"


class Api:
    def __init__(self, client: httpx.AsyncClient, key: str = OPERATOR) -> None:
        self.client, self.key = client, key

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"authorization": f"Bearer {self.key}"}
        response = await self.client.request(method, path, json=body, headers=headers)
        assert response.status_code < 400, response.text
        return response.json()

    async def crawl(self, **spec: Any) -> str:
        created = await self.call("POST", "/v1/crawls", spec)
        return str(created["id"])

    async def finished(self, crawl_id: str, timeout: float = 60) -> dict[str, Any]:
        for _ in range(int(timeout / 0.2)):
            status = await self.call("GET", f"/v1/crawls/{crawl_id}")
            if status["status"] in ("completed", "failed", "dead-lettered"):
                return dict(status)
            await asyncio.sleep(0.2)
        raise AssertionError(f"crawl {crawl_id} did not finish: {status}")


async def containers(operator: Api) -> dict[str, dict[str, Any]]:
    listed = await operator.call("GET", "/v1/containers")
    return {c["id"]: c for c in listed["items"]}


async def test_two_egresses_spread_score_out_a_failing_proxy_and_keep_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, dead = await ForwardProxy().start(), await ForwardProxy().start()
    await dead.stop()  # refuses every connection: a failing proxy
    good_url = f"http://crawler:s3cret@127.0.0.1:{good.port}"  # credentials, to be redacted
    pool = [
        {"name": "home", "runtime": "local", "region": "here"},
        {"name": "lab", "runtime": "local", "region": "lab", "proxies": [dead.url, good_url]},
    ]
    monkeypatch.setenv("SKYCRAWL_EGRESSES", json.dumps(pool))
    monkeypatch.setenv("SKYCRAWL_OPERATOR_KEY", OPERATOR)
    monkeypatch.setenv("SKYCRAWL_HEARTBEAT_INTERVAL_S", "0.3")
    monkeypatch.setenv("SKYCRAWL_PROXY_COOLDOWN_S", "600")
    async with serve_site(30) as site:
        with skycrawl_up(tmp_path) as (_, url):
            async with httpx.AsyncClient(base_url=url, timeout=10, trust_env=False) as client:
                operator = Api(client)
                tenant = await operator.call(
                    "POST",
                    "/v1/tenants",
                    {"name": "acme", "quotas": {"max_containers": 3, "parallel_per_container": 1}},
                )
                api = Api(client, tenant["api_key"])

                # 1. two crawls at once spread over the two egresses (equal price and start)
                seeds = [f"{site.url}p/{i}" for i in range(25)]
                broad = {"seeds": seeds, "max_pages": 25, "max_depth": 0}
                first = await api.crawl(**broad, respect_robots=False, use_sitemaps=False)
                second = await api.crawl(**broad, respect_robots=False, use_sitemaps=False)
                done = [await api.finished(first), await api.finished(second)]
                fleet = await containers(operator)
                used = {fleet[d["container_id"]]["egress"]["name"] for d in done}
                assert used == {"home", "lab"}
                lab = next(c for c in fleet.values() if c["egress"]["name"] == "lab")
                assert (lab["runtime"], lab["region"]) == ("local", "lab")

                # 2. the lab crawl went through the dead proxy: every fetch failed, the
                # heartbeats said so, and the proxy is scored out
                through_dead = next(d for d in done if fleet[d["container_id"]] is lab)
                assert through_dead["counts"]["fetched"] == 0
                for _ in range(50):
                    proxies = {
                        p["id"]: p for p in (await containers(operator))[lab["id"]]["proxies"]
                    }
                    if proxies[proxy_id(dead.url)]["state"] == "out":
                        break
                    await asyncio.sleep(0.2)
                assert proxies[proxy_id(dead.url)]["state"] == "out", proxies
                assert "network errors" in proxies[proxy_id(dead.url)]["reason"]
                assert proxies[proxy_id(good_url)]["state"] == "ok"
                assert (
                    proxies[proxy_id(good_url)]["url"]
                    == f"http://crawler:***@127.0.0.1:{good.port}"
                )

                # 3. a session in the lab leaves through the good proxy now ...
                session = {"seeds": [site.url], "max_pages": 3, "session": "login"}
                one = await api.finished(await api.crawl(**session, egress="lab"))
                assert one["status"] == "completed"
                assert any(u.startswith(site.url) for u in good.seen)
                seen_before = len(good.seen)
                # ... its container stops when idle, and the session's next crawl, which
                # names no egress, comes back to the same egress and proxy on a new container
                for _ in range(100):
                    if one["container_id"] not in {
                        c["id"]
                        for c in (await containers(operator)).values()
                        if c["state"] != "stopped"
                    }:
                        break
                    await asyncio.sleep(0.2)
                two = await api.finished(await api.crawl(**session, max_depth=1))
                assert two["status"] == "completed"
                assert two["container_id"] != one["container_id"]
                fleet = await containers(operator)
                assert fleet[two["container_id"]]["egress"]["name"] == "lab"
                assert len(good.seen) > seen_before  # through the same proxy again
                assert dead.seen == []

            status = run_cli(["status"], tmp_path)
            assert status.returncode == 0, status.stderr
            assert "s3cret" not in status.stdout
            assert "runtime" in status.stdout
            assert "region" in status.stdout
    await good.stop()
