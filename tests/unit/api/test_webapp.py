"""The web app and the operator console through the API's handler: sign-in, sessions, CSRF,
roles, tenant isolation, validation errors from the API, headers, dead letters."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from api_harness import OPERATOR_KEY, START, Harness
from web_client import Browser

from core.budgets import BUDGET_KEY, Budget, Budgets, budgets_table
from core.layout import manifest_key
from core.metering import EgressUsage, Meter, MeterEvent, Usage
from core.models import Container, Crawl, CrawlState, Egress
from core.ports.message_bus import OutboundMessage, Queue, dead_letter_queue
from core.webapp.app import TEMPLATES

SEED_FORM = {"seeds": "https://example.com/", "max_pages": "5", "respect_robots": "on"}


async def signed_in(harness: Harness, name: str = "acme") -> tuple[str, str, Browser]:
    tenant_id, key = await harness.create_tenant(name)
    browser = Browser(harness.api)
    response = await browser.sign_in(tenant_id, key)
    assert response.status == 303
    return tenant_id, key, browser


async def start_crawl(browser: Browser, tenant_id: str, **fields: str) -> str:
    token = await browser.csrf(f"/t/{tenant_id}/new")
    response = await browser.post(f"/t/{tenant_id}/new", {"csrf": token, **SEED_FORM, **fields})
    assert response.status == 303, response.body[:2000]
    return response.headers["location"].rsplit("/", 1)[1]


# ------------------------------------------------------------------ sign-in and sessions


async def test_sign_in_sets_a_strict_httponly_cookie_scoped_to_the_tenant(
    harness: Harness,
) -> None:
    tenant_id, key = await harness.create_tenant("acme")
    response = await Browser(harness.api).sign_in(tenant_id, key)
    cookie = response.headers["set-cookie"]
    assert f"Path=/t/{tenant_id}/" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Secure" in cookie
    assert key not in str(await harness.state.scan(table="web_sessions"))
    value = cookie.split(";")[0].split("=", 1)[1]
    assert value not in str(await harness.state.scan(table="web_sessions"))


async def test_plain_http_on_loopback_drops_only_the_secure_flag(harness: Harness) -> None:
    tenant_id, key = await harness.create_tenant("acme")
    api = harness.with_settings(public_base_url="http://127.0.0.1:8787")
    response = await Browser(api, host="127.0.0.1:8787").sign_in(tenant_id, key)
    assert "Secure" not in response.headers["set-cookie"]
    assert "HttpOnly" in response.headers["set-cookie"]


async def test_a_key_of_another_tenant_does_not_sign_in_here(harness: Harness) -> None:
    tenant_a, _ = await harness.create_tenant("a")
    _, key_b = await harness.create_tenant("b")
    response = await Browser(harness.api).sign_in(tenant_a, key_b)
    assert response.status == 401
    assert "set-cookie" not in response.headers
    assert "not valid" in response.body.decode()


async def test_unknown_tenant_has_no_sign_in_page(harness: Harness) -> None:
    response = await Browser(harness.api).get(f"/t/tn_{'0' * 32}/signin")
    assert response.status == 404
    assert "Sign in" not in response.body.decode()


async def test_logout_revokes_the_session(harness: Harness) -> None:
    tenant_id, _, browser = await signed_in(harness)
    cookie = browser.cookie
    token = await browser.csrf(f"/t/{tenant_id}/crawls")
    await browser.post(f"/t/{tenant_id}/logout", {"csrf": token})
    assert browser.cookie is None
    browser.cookie = cookie  # replaying the old cookie
    response = await browser.get(f"/t/{tenant_id}/crawls")
    assert response.status == 303
    assert response.headers["location"] == f"/t/{tenant_id}/signin"


async def test_sessions_expire(harness: Harness) -> None:
    tenant_id, _, browser = await signed_in(harness)
    harness.clock.advance(4 * 3600 + 1)
    response = await browser.get(f"/t/{tenant_id}/crawls")
    assert response.status == 303
    assert response.headers["location"].endswith("/signin")


# ------------------------------------------------------------------ tenant isolation


async def test_a_session_of_tenant_a_never_shows_tenant_b_data(harness: Harness) -> None:
    tenant_a, _, browser_a = await signed_in(harness, "a")
    tenant_b, _, browser_b = await signed_in(harness, "b")
    crawl_b = await start_crawl(browser_b, tenant_b, seeds="https://b-secret.example/")
    # B's crawl id under A's web app: not found, exactly like a crawl that does not exist
    for path in ("", "/export", "/pages/0-0", "/pages/0-0/content", "/edit"):
        response = await browser_a.get(f"/t/{tenant_a}/crawls/{crawl_b}{path}")
        assert response.status == 404, path
        assert "b-secret" not in response.body.decode()
    listing = await browser_a.get(f"/t/{tenant_a}/crawls.json")
    assert crawl_b not in listing.body.decode()
    # A's cookie presented to B's web app: no session there
    response = await browser_a.get(f"/t/{tenant_b}/crawls")
    assert response.status == 303
    assert response.headers["location"] == f"/t/{tenant_b}/signin"
    # and A cannot act on B's crawl
    token = await browser_a.csrf(f"/t/{tenant_a}/crawls")
    cancel = await browser_a.post(f"/t/{tenant_a}/crawls/{crawl_b}/cancel", {"csrf": token})
    assert cancel.status == 404
    crawl = await harness.records.crawls.get(tenant_b, crawl_b)
    assert crawl is not None
    assert crawl.value.state.value == "pending"


async def test_tenant_sessions_and_keys_cannot_open_the_console(harness: Harness) -> None:
    _tenant_id, key, browser = await signed_in(harness)
    assert (await browser.get("/console/")).status == 303  # to the console's sign-in
    response = await browser.post("/console/signin", {"key": key})
    assert response.status == 401
    assert "set-cookie" not in response.headers
    # a tenant cookie replayed under /console/ is not an operator session
    response = await browser.request("GET", "/console/tenants")
    assert response.status == 303


async def test_operator_session_cannot_act_as_a_tenant(harness: Harness) -> None:
    tenant_id, _ = await harness.create_tenant("acme")
    operator = Browser(harness.api)
    assert (await operator.post("/console/signin", {"key": OPERATOR_KEY})).status == 303
    response = await operator.get(f"/t/{tenant_id}/crawls")
    assert response.status == 303
    assert response.headers["location"].endswith("/signin")


# ------------------------------------------------------------------ CSRF


async def test_state_changing_posts_without_the_csrf_token_are_refused(
    harness: Harness,
) -> None:
    tenant_id, _, browser = await signed_in(harness)
    for form in (SEED_FORM, {**SEED_FORM, "csrf": "forged-token-of-the-right-length-000000000"}):
        response = await browser.post(f"/t/{tenant_id}/new", form)
        assert response.status == 403
    assert await harness.count("crawls") == 0
    response = await browser.post(f"/t/{tenant_id}/keys", {"action": "create"})
    assert response.status == 403
    assert await harness.count("key_index") == 1


async def test_a_csrf_token_of_another_session_is_refused(harness: Harness) -> None:
    tenant_id, key, browser = await signed_in(harness)
    other = Browser(harness.api)
    await other.sign_in(tenant_id, key)
    token_of_other = await other.csrf(f"/t/{tenant_id}/new")
    response = await browser.post(f"/t/{tenant_id}/new", {"csrf": token_of_other, **SEED_FORM})
    assert response.status == 403
    assert await harness.count("crawls") == 0


async def test_cross_site_posts_are_refused_even_the_sign_in(harness: Harness) -> None:
    tenant_id, key = await harness.create_tenant("acme")
    browser = Browser(harness.api)
    response = await browser.post(
        f"/t/{tenant_id}/signin", {"key": key}, headers={"origin": "https://evil.example"}
    )
    assert response.status == 403
    assert "set-cookie" not in response.headers
    response = await browser.post(
        f"/t/{tenant_id}/signin", {"key": key}, headers={"sec-fetch-site": "cross-site"}
    )
    assert response.status == 403
    # a form in a sandboxed frame (the preview, say) posts with Origin: null
    response = await browser.post(
        f"/t/{tenant_id}/signin", {"key": key}, headers={"origin": "null"}
    )
    assert response.status == 403
    same = await browser.post(
        f"/t/{tenant_id}/signin", {"key": key}, headers={"sec-fetch-site": "same-origin"}
    )
    assert same.status == 303


# ------------------------------------------------------------------ crawls through the form


async def test_the_form_submits_through_the_api_and_shows_its_errors_inline(
    harness: Harness,
) -> None:
    tenant_id, _, browser = await signed_in(harness)
    token = await browser.csrf(f"/t/{tenant_id}/new")
    response = await browser.post(
        f"/t/{tenant_id}/new",
        {"csrf": token, "seeds": "ftp://example.com/", "max_pages": "lots", "include": "("},
    )
    assert response.status == 422
    page = response.body.decode()
    for name in ("seeds", "max_pages", "include"):
        assert f'aria-describedby="{name}-error"' in page
        assert f'id="{name}-error"' in page
    assert "only http and https URLs can be crawled" in page  # the API's own message
    assert "ftp://example.com/" in page  # what was typed stays in the form
    assert await harness.count("crawls") == 0


async def test_unsafe_urls_are_refused_by_the_same_guard_as_the_api(harness: Harness) -> None:
    tenant_id, _, browser = await signed_in(harness)
    token = await browser.csrf(f"/t/{tenant_id}/new")
    response = await browser.post(
        f"/t/{tenant_id}/new",
        {"csrf": token, "seeds": "http://169.254.169.254/latest/meta-data/"},
    )
    assert response.status == 422
    assert 'id="seeds-error"' in response.body.decode()
    assert await harness.count("crawls") == 0


async def test_a_crawl_started_in_the_form_is_the_apis_crawl(harness: Harness) -> None:
    tenant_id, key, browser = await signed_in(harness)
    crawl_id = await start_crawl(
        browser,
        tenant_id,
        exclude="/private/",
        headers="Accept-Language: de",
        session="s1",
        webhook_url="https://hooks.example.com/done",
    )
    status = await harness.call("GET", f"/v1/crawls/{crawl_id}", key=key)
    assert status.status == 200
    stored = await harness.records.crawls.get(tenant_id, crawl_id)
    assert stored is not None
    spec = stored.value.spec
    assert spec.max_pages == 5
    assert spec.exclude == ["/private/"]
    assert spec.headers == {"accept-language": "de"}
    assert spec.session == "s1"
    assert [m.type for m in await harness.inbox()] == ["crawl.submitted"]
    page = await browser.get(f"/t/{tenant_id}/crawls/{crawl_id}")
    assert page.status == 200
    assert "export?format=jsonl" in page.body.decode()
    assert "export?format=warc" in page.body.decode()


async def test_a_double_submitted_form_starts_one_crawl(harness: Harness) -> None:
    tenant_id, _, browser = await signed_in(harness)
    page = (await browser.get(f"/t/{tenant_id}/new")).body.decode()
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    idem = re.search(r'name="idempotency_key" value="([^"]+)"', page)
    assert token
    assert idem
    form = {"csrf": token[1], "idempotency_key": idem[1], **SEED_FORM}
    first = await browser.post(f"/t/{tenant_id}/new", form)
    second = await browser.post(f"/t/{tenant_id}/new", form)
    assert first.headers["location"] == second.headers["location"]
    assert await harness.count("crawls") == 1


async def test_cancel_and_rerun(harness: Harness) -> None:
    tenant_id, _, browser = await signed_in(harness)
    crawl_id = await start_crawl(browser, tenant_id)
    token = await browser.csrf(f"/t/{tenant_id}/crawls")
    cancel = await browser.post(f"/t/{tenant_id}/crawls/{crawl_id}/cancel", {"csrf": token})
    assert cancel.status == 303
    crawl = await harness.records.crawls.get(tenant_id, crawl_id)
    assert crawl is not None
    assert crawl.value.state.value == "cancelled"
    again = await browser.post(f"/t/{tenant_id}/crawls/{crawl_id}/cancel", {"csrf": token})
    assert again.status == 409
    rerun = await browser.post(f"/t/{tenant_id}/crawls/{crawl_id}/rerun", {"csrf": token})
    assert rerun.status == 303
    new_id = rerun.headers["location"].rsplit("/", 1)[1]
    assert new_id != crawl_id
    new = await harness.records.crawls.get(tenant_id, new_id)
    assert new is not None
    assert new.value.spec == crawl.value.spec


async def test_a_paused_crawl_offers_resume_and_resumes(harness: Harness) -> None:
    tenant_id, _, browser = await signed_in(harness)
    crawl_id = await start_crawl(browser, tenant_id)
    page = await browser.get(f"/t/{tenant_id}/crawls/{crawl_id}")
    assert 'data-role="resume"' not in page.body.decode(), "only a paused crawl resumes"

    def pause(c: Crawl) -> Crawl:  # what the conductor does at the budget's limit
        return c.model_copy(update={"state": CrawlState.paused, "reason": "budget reached"})

    await harness.records.crawls.mutate(tenant_id, crawl_id, pause)
    page = await browser.get(f"/t/{tenant_id}/crawls/{crawl_id}")
    assert 'data-role="resume"' in page.body.decode()
    token = await browser.csrf(f"/t/{tenant_id}/crawls/{crawl_id}")
    resumed = await browser.post(f"/t/{tenant_id}/crawls/{crawl_id}/resume", {"csrf": token})
    assert resumed.status == 303
    crawl = await harness.records.crawls.get(tenant_id, crawl_id)
    assert crawl is not None
    assert crawl.value.state is CrawlState.pending
    again = await browser.post(f"/t/{tenant_id}/crawls/{crawl_id}/resume", {"csrf": token})
    assert again.status == 409


# ------------------------------------------------------------------ invited users and roles


async def invited(harness: Harness, tenant_id: str, admin: Browser, role: str) -> Browser:
    token = await admin.csrf(f"/t/{tenant_id}/users")
    page = await admin.post(
        f"/t/{tenant_id}/users", {"csrf": token, "action": "invite", "name": "Vi", "role": role}
    )
    link = re.search(r'id="invite-link" class="mono" readonly value="([^"]+)"', page.body.decode())
    assert link, page.body.decode()[:2000]
    invite = link[1].split("token=", 1)[1]
    user = Browser(harness.api)
    join = await user.get(f"/t/{tenant_id}/join", token=invite)
    assert join.status == 200
    response = await user.post(f"/t/{tenant_id}/join", {"token": invite})
    assert response.status == 303
    return user


async def test_a_viewer_reads_but_cannot_start_or_cancel(harness: Harness) -> None:
    tenant_id, _, admin = await signed_in(harness)
    crawl_id = await start_crawl(admin, tenant_id)
    viewer = await invited(harness, tenant_id, admin, "viewer")
    page = await viewer.get(f"/t/{tenant_id}/crawls")
    assert page.status == 200
    assert crawl_id in page.body.decode()
    assert "/cancel" not in page.body.decode()
    token = await viewer.csrf(f"/t/{tenant_id}/crawls")
    assert (await viewer.post(f"/t/{tenant_id}/new", {"csrf": token, **SEED_FORM})).status == 403
    cancel = await viewer.post(f"/t/{tenant_id}/crawls/{crawl_id}/cancel", {"csrf": token})
    assert cancel.status == 403
    assert (await viewer.get(f"/t/{tenant_id}/keys")).status == 403
    assert await harness.count("crawls") == 1


async def test_an_editor_starts_crawls_but_does_not_manage_keys(harness: Harness) -> None:
    tenant_id, _, admin = await signed_in(harness)
    editor = await invited(harness, tenant_id, admin, "editor")
    await start_crawl(editor, tenant_id)
    assert (await editor.get(f"/t/{tenant_id}/keys")).status == 403
    assert (await editor.get(f"/t/{tenant_id}/users")).status == 403


async def test_removing_a_user_ends_their_sessions_and_link(harness: Harness) -> None:
    tenant_id, _, admin = await signed_in(harness)
    viewer = await invited(harness, tenant_id, admin, "viewer")
    users = await harness.records.web_users.query(tenant_id)
    token = await admin.csrf(f"/t/{tenant_id}/users")
    await admin.post(
        f"/t/{tenant_id}/users",
        {"csrf": token, "action": "remove", "user": users[0].value.id},
    )
    assert (await viewer.get(f"/t/{tenant_id}/crawls")).status == 303


async def test_invite_links_expire(harness: Harness) -> None:
    tenant_id, _ = await harness.create_tenant("acme")
    _, token = await harness.api.web.sessions.invite(tenant_id, "Late", "viewer")
    harness.clock.advance(timedelta(days=7, seconds=1).total_seconds())
    response = await Browser(harness.api).post(f"/t/{tenant_id}/join", {"token": token})
    assert response.status == 401
    assert "set-cookie" not in response.headers


async def test_teardown_removes_web_users_and_sessions(harness: Harness) -> None:
    tenant_id, _, admin = await signed_in(harness)
    await invited(harness, tenant_id, admin, "viewer")
    assert await harness.count("web_sessions") == 2
    deleted = await harness.call("DELETE", f"/v1/tenants/{tenant_id}", key=OPERATOR_KEY)
    assert deleted.status == 204
    assert await harness.count("web_sessions") == 0
    assert await harness.count("web_users") == 0
    assert (await admin.get(f"/t/{tenant_id}/crawls")).status == 404


# ------------------------------------------------------------------ keys in the browser


async def test_rotating_a_key_shows_the_new_key_once(harness: Harness) -> None:
    tenant_id, key, browser = await signed_in(harness)
    token = await browser.csrf(f"/t/{tenant_id}/keys")
    prefix = key.split("_")[1]
    page = await browser.post(
        f"/t/{tenant_id}/keys", {"csrf": token, "action": "rotate", "prefix": prefix}
    )
    match = re.search(r'value="(sk_[0-9a-f]{8}_[^"]+)"', page.body.decode())
    assert match
    assert (await harness.call("GET", "/v1/crawls", key=match[1])).status == 200
    assert (await harness.call("GET", "/v1/crawls", key=key)).status == 401
    listing = (await browser.get(f"/t/{tenant_id}/keys")).body.decode()
    assert match[1] not in listing


# ------------------------------------------------------------------ headers and assets


async def test_pages_carry_a_strict_csp_and_framing_and_referrer_policies(
    harness: Harness,
) -> None:
    tenant_id, _, browser = await signed_in(harness)
    for path in ("/crawls", "/new", "/usage", "/keys", "/users", "/signin"):
        response = await browser.get(f"/t/{tenant_id}{path}")
        assert response.status == 200, path
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "same-origin"
        body = response.body.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)", body), path  # no inline script
        assert not re.search(r"<style|\sstyle=", body), path  # no inline style
        assert not re.search(r"\son[a-z]+=", body), path  # no inline handlers


@pytest.mark.parametrize("template", sorted(p.name for p in TEMPLATES.glob("*.html")))
def test_templates_have_no_inline_script_or_style(template: str) -> None:
    text = (TEMPLATES / template).read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", text)
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", text)


async def test_assets_have_hashed_names_and_long_cache_headers(harness: Harness) -> None:
    tenant_id, _, browser = await signed_in(harness)
    page = (await browser.get(f"/t/{tenant_id}/crawls")).body.decode()
    urls = re.findall(r'(?:src|href)="(/assets/[^"]+)"', page)
    assert {Path(u).suffix for u in urls} == {".css", ".js", ".svg"}
    for url in urls:
        assert re.fullmatch(r"/assets/(app|icon)\.[0-9a-f]{12}\.(css|js|svg)", url)
        response = await browser.get(url)
        assert response.status == 200
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert (await browser.get("/assets/app.000000000000.js")).status == 404


async def test_the_preview_is_served_sandboxed(harness: Harness) -> None:
    tenant_id, _, browser = await signed_in(harness)
    crawl_id = await start_crawl(browser, tenant_id)
    record = b'{"url": "https://example.com/", "status": 200, "fetched_at": "2030-01-01T00:00:00Z"}'
    await harness.blobs.put(key=manifest_key(tenant_id, crawl_id, 0), data=record + b"\n")
    page = await browser.get(f"/t/{tenant_id}/crawls/{crawl_id}/pages/0-0")
    assert page.status == 200
    assert re.search(r'<iframe src="[^"]+/content" sandbox=""', page.body.decode())
    content = await browser.get(f"/t/{tenant_id}/crawls/{crawl_id}/pages/0-0/content")
    assert content.headers["content-security-policy"].startswith("sandbox; default-src 'none'")
    assert (await browser.get(f"/t/{tenant_id}/crawls/{crawl_id}/pages/9-9")).status == 404


# ------------------------------------------------------------------ console


async def test_the_operator_requeues_a_dead_letter_with_its_original_body(
    harness: Harness,
) -> None:
    inbox = harness.settings.inbox_queue
    body = b'{"type": "crawl.submitted", "tenant_id": "tn_x", "crawl_id": "cr_y"}'
    await harness.bus.send(queue=inbox, message=OutboundMessage(body, {"kind": "test"}))
    (lease,) = await harness.bus.receive(source=Queue(inbox), max_messages=1)
    await harness.bus.dead_letter(lease=lease, reason="conductor gave up")
    operator = Browser(harness.api)
    await operator.post("/console/signin", {"key": OPERATOR_KEY})
    page = (await operator.get("/console/dead-letters")).body.decode()
    assert "conductor gave up" in page
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    message_id = re.search(r'name="message_id" value="([^"]+)"', page)
    assert token
    assert message_id
    done = await operator.post(
        "/console/dead-letters", {"csrf": token[1], "message_id": message_id[1]}
    )
    assert "Requeued" in done.body.decode()
    back = await harness.bus.receive(source=Queue(inbox), max_messages=10)
    assert [(m.body, dict(m.attributes)) for m in back] == [(body, {"kind": "test"})]
    assert await harness.bus.receive(source=Queue(dead_letter_queue(inbox))) == []


async def test_the_fleet_and_tenant_pages_show_what_the_records_hold(harness: Harness) -> None:
    tenant_id, _ = await harness.create_tenant("acme")
    operator = Browser(harness.api)
    await operator.post("/console/signin", {"key": OPERATOR_KEY})
    fleet = await operator.get("/console/")
    assert fleet.status == 200
    assert "cold starts in the last hour" in fleet.body.decode()
    tenants = (await operator.get("/console/tenants")).body.decode()
    assert tenant_id in tenants
    assert f"/t/{tenant_id}/" in tenants  # the provisioned web app address


async def test_the_fleet_page_shows_each_egress_s_proxies_redacted(harness: Harness) -> None:
    tenant_id, _ = await harness.create_tenant("acme")
    secret = "http://bob:hunter2@proxy.test:3128"
    egress = Egress(name="lab", region="lab", proxies=[secret])
    container = Container(
        id="c-lab", tenant_id=tenant_id, egress=egress, started_at=harness.clock.now()
    )
    await harness.records.containers.create(tenant_id, container.id, container)
    operator = Browser(harness.api)
    await operator.post("/console/signin", {"key": OPERATOR_KEY})
    page = (await operator.get("/console/")).body.decode()
    assert "proxies: http://bob:***@proxy.test:3128" in page
    assert "hunter2" not in page


async def test_the_operator_creates_and_deletes_tenants_from_the_console(
    harness: Harness,
) -> None:
    operator = Browser(harness.api)
    await operator.post("/console/signin", {"key": OPERATOR_KEY})
    token = await operator.csrf("/console/tenants")
    bad = await operator.post(
        "/console/tenants",
        {"csrf": token, "action": "create", "name": "x", "max_containers": "0"},
    )
    assert "quotas.max_containers" in bad.body.decode()
    assert await harness.count("tenants") == 0
    page = await operator.post(
        "/console/tenants",
        {"csrf": token, "action": "create", "name": "acme", "max_containers": "2"},
    )
    key = re.search(r'id="new-key" class="mono" readonly value="([^"]+)"', page.body.decode())
    assert key
    (tenant,) = [v.value for v in await harness.records.tenants.scan()]
    assert tenant.quotas.max_containers == 2
    assert (await harness.call("GET", "/v1/crawls", key=key[1])).status == 200
    delete = {"csrf": token, "action": "delete", "tenant": tenant.id}
    unconfirmed = await operator.post("/console/tenants", delete)
    assert "confirm" in unconfirmed.body.decode()
    assert await harness.count("tenants") == 1
    await operator.post("/console/tenants", {**delete, "confirm": "on"})
    assert await harness.count("tenants") == 0


async def test_invite_links_are_absolute_even_without_a_configured_base_url(
    harness: Harness,
) -> None:
    api = harness.with_settings(public_base_url="")
    tenant_id, key = await harness.create_tenant("acme")
    admin = Browser(api, host="crawl.example.org")
    await admin.sign_in(tenant_id, key)
    token = await admin.csrf(f"/t/{tenant_id}/users")
    page = await admin.post(
        f"/t/{tenant_id}/users", {"csrf": token, "action": "invite", "name": "V", "role": "viewer"}
    )
    assert f'value="https://crawl.example.org/t/{tenant_id}/join?token=inv_' in page.body.decode()


async def test_fields_beyond_the_page_metadata_are_shown_as_extracted_items(
    harness: Harness,
) -> None:
    tenant_id, _, browser = await signed_in(harness)
    crawl_id = await start_crawl(browser, tenant_id)
    record = {
        "url": "https://example.com/",
        "status": 200,
        "fetched_at": "2030-01-01T00:00:00Z",
        "items": [{"price": "<b>9.99</b>"}],
    }
    line = json.dumps(record).encode()
    await harness.blobs.put(key=manifest_key(tenant_id, crawl_id, 0), data=line + b"\n")
    page = (await browser.get(f"/t/{tenant_id}/crawls/{crawl_id}/pages/0-0")).body.decode()
    assert "&#34;price&#34;: &#34;&lt;b&gt;9.99&lt;/b&gt;&#34;" in page  # shown, and escaped


async def test_the_usage_page_shows_what_is_in_use_against_each_quota(harness: Harness) -> None:
    tenant_id, _, browser = await signed_in(harness)
    await start_crawl(browser, tenant_id)
    await start_crawl(browser, tenant_id, seeds="https://example.org/")
    page = (await browser.get(f"/t/{tenant_id}/usage")).body.decode()
    assert '<th scope="row">Crawls pending or running</th><td>2</td><td>1000</td>' in page
    assert "<td>2 this minute</td><td>120</td>" in page
    assert "Nothing used yet this month." in page
    assert "No monthly budget is set" in page


async def test_the_usage_page_shows_this_months_cost_per_egress_and_day_and_the_budget(
    harness: Harness,
) -> None:
    tenant_id, _, browser = await signed_in(harness)
    share = EgressUsage(container_seconds=90.0, billed_seconds=120.0, cost=1.2, cold_starts=2)
    used = Usage(
        container_seconds=90.0,
        billed_seconds=120.0,
        cost=1.2,
        cold_starts=2,
        crawls=3,
        pages=42,
        egress={"fargate": share},
    )
    meter = Meter(harness.state)
    await meter.apply(MeterEvent(tenant_id=tenant_id, hour=START, event="a", usage=used))
    last_month = START - timedelta(days=3)  # not this month: not shown
    await meter.apply(MeterEvent(tenant_id=tenant_id, hour=last_month, event="b", usage=used))
    budget = Budget(monthly_amount=1.0)
    await budgets_table(harness.records).create(tenant_id, BUDGET_KEY, budget)
    await Budgets(harness.records).evaluate(tenant_id, harness.clock.now())

    page = (await browser.get(f"/t/{tenant_id}/usage")).body.decode()

    assert '<dt>Cost</dt><dd class="cost">1.20</dd>' in page
    assert "<dd>42 fetched, 0 failed</dd>" in page
    assert (
        '<tr><th scope="row">fargate</th><td>90</td><td>120</td><td>2</td><td>1.20</td></tr>'
        in page
    )
    assert '<tr><th scope="row">2030-01-01</th><td>1.20</td><td>42</td><td>2</td></tr>' in page
    assert "2029-12" not in page
    assert "1.20 of 1.00 spent in 2030-01" in page
    assert "<strong>reached</strong>: new crawls are refused (HTTP 402)" in page


async def test_the_page_browser_filters_by_status_type_and_url(harness: Harness) -> None:
    tenant_id, _, browser = await signed_in(harness)
    crawl_id = await start_crawl(browser, tenant_id)
    at = "2030-01-01T00:00:00Z"
    records = [
        {"url": "https://e.com/a", "status": 200, "content_type": "text/html", "fetched_at": at},
        {
            "url": "https://e.com/b.pdf",
            "status": 200,
            "content_type": "application/pdf",
            "fetched_at": at,
        },
        {"url": "https://e.com/gone", "status": 404, "content_type": "text/html", "fetched_at": at},
        {"url": "https://e.com/down", "error": "connection refused", "fetched_at": at},
    ]
    chunks = [records[:2], records[2:]]
    for seq, chunk in enumerate(chunks):
        data = b"".join(json.dumps(r).encode() + b"\n" for r in chunk)
        await harness.blobs.put(key=manifest_key(tenant_id, crawl_id, seq), data=data)

    async def shown(**query: str) -> list[str]:
        page = await browser.get(f"/t/{tenant_id}/crawls/{crawl_id}", **query)
        return re.findall(r'/pages/(\d+-\d+)">(https://e\.com/[^<]+)<', page.body.decode())

    assert len(await shown()) == 4
    assert await shown(status="client-error") == [("1-0", "https://e.com/gone")]
    assert await shown(status="failed") == [("1-1", "https://e.com/down")]
    assert await shown(type="pdf") == [("0-1", "https://e.com/b.pdf")]
    assert await shown(url="GONE") == [("1-0", "https://e.com/gone")]
    assert await shown(status="ok", type="html") == [("0-0", "https://e.com/a")]
    page = await browser.get(f"/t/{tenant_id}/crawls/{crawl_id}/pages/1-1")
    assert "connection refused" in page.body.decode()


async def test_the_webhook_secret_is_made_rotated_and_revoked_from_the_keys_page(
    harness: Harness,
) -> None:
    tenant_id, key, browser = await signed_in(harness)
    page = (await browser.get(f"/t/{tenant_id}/keys")).body.decode()
    assert "No secret yet: webhooks are delivered unsigned." in page

    token = await browser.csrf(f"/t/{tenant_id}/keys")
    made = await browser.post(f"/t/{tenant_id}/keys", {"csrf": token, "action": "webhook-rotate"})
    first = re.search(r'value="(whsec_[^"]+)"', made.body.decode())
    assert first, made.body.decode()
    api = (await harness.call("GET", "/v1/webhooks/secret", key=key)).parsed()
    assert api["current"]["id"] in made.body.decode()

    token = await browser.csrf(f"/t/{tenant_id}/keys")
    rotated = await browser.post(
        f"/t/{tenant_id}/keys", {"csrf": token, "action": "webhook-rotate", "grace_h": "2"}
    )
    second = re.search(r'value="(whsec_[^"]+)"', rotated.body.decode())
    assert second
    assert second[1] != first[1]
    assert "keeps signing for 2.0 h" in rotated.body.decode()
    listing = (await browser.get(f"/t/{tenant_id}/keys")).body.decode()
    assert first[1] not in listing  # each shown once
    assert second[1] not in listing
    assert [
        s["id"]
        for s in (await harness.call("GET", "/v1/webhooks/secret", key=key)).parsed()["retiring"]
    ] == [api["current"]["id"]]

    token = await browser.csrf(f"/t/{tenant_id}/keys")
    await browser.post(f"/t/{tenant_id}/keys", {"csrf": token, "action": "webhook-revoke"})
    assert (await harness.call("GET", "/v1/webhooks/secret", key=key)).status == 404
    assert "No secret yet" in (await browser.get(f"/t/{tenant_id}/keys")).body.decode()


async def test_the_budget_is_set_changed_and_removed_from_the_usage_page(
    harness: Harness,
) -> None:
    tenant_id, key, browser = await signed_in(harness)
    token = await browser.csrf(f"/t/{tenant_id}/usage")
    bad = await browser.post(
        f"/t/{tenant_id}/usage", {"csrf": token, "action": "budget-set", "monthly_amount": "-5"}
    )
    assert bad.status == 200
    assert 'role="alert"' in bad.body.decode()
    assert "monthly_amount" in bad.body.decode()
    assert (await harness.call("GET", "/v1/budget", key=key)).parsed()["budget"] is None

    token = await browser.csrf(f"/t/{tenant_id}/usage")
    form = {"csrf": token, "action": "budget-set", "monthly_amount": "25", "thresholds": "80, 100"}
    done = await browser.post(f"/t/{tenant_id}/usage", form)
    assert done.status == 303, re.findall(r"role=\"alert\"[^<]*>([^<]*)", done.body.decode())
    budget = (await harness.call("GET", "/v1/budget", key=key)).parsed()["budget"]
    assert (budget["monthly_amount"], budget["thresholds"]) == (25.0, [80, 100])
    page = (await browser.get(f"/t/{tenant_id}/usage")).body.decode()
    assert "of 25.00 spent" in page

    token = await browser.csrf(f"/t/{tenant_id}/usage")
    await browser.post(f"/t/{tenant_id}/usage", {"csrf": token, "action": "budget-clear"})
    assert (await harness.call("GET", "/v1/budget", key=key)).parsed()["budget"] is None


async def test_the_console_shows_each_tenants_usage_this_month(harness: Harness) -> None:
    used_id, _ = await harness.create_tenant("busy")
    idle_id, _ = await harness.create_tenant("idle")
    used = Usage(container_seconds=90.0, billed_seconds=120.0, cost=1.2, cold_starts=2, pages=42)
    await Meter(harness.state).apply(
        MeterEvent(tenant_id=used_id, hour=START, event="a", usage=used)
    )
    operator = Browser(harness.api)
    assert (await operator.post("/console/signin", {"key": OPERATOR_KEY})).status == 303
    page = (await operator.get("/console/tenants")).body.decode()
    busy, idle = page.split(used_id, 1)[1], page.split(idle_id, 1)[1]
    assert '<dd class="cost">1.20 (+0.00 running now)</dd>' in busy.split("</section>")[0]
    assert "<dd>90 s, 2 cold starts</dd>" in busy.split("</section>")[0]
    assert '<dd class="cost">0.00 (+0.00 running now)</dd>' in idle.split("</section>")[0]
