"""Sign-in for teams, end to end: a real OpenID Connect round trip in headless Chromium.

A real ``streamlit run`` server with sign-in on (an ``[auth]`` section in a secrets.toml of
a temporary folder, passed with Streamlit's ``secrets.files`` option, so the repository's
``.streamlit/`` is never written), Streamlit's own ``st.login`` / ``st.logout`` routes and
Authlib, against `tests.e2e.oidc_provider.MockOIDCProvider` on 127.0.0.1 (discovery,
authorize page, token endpoint, RS256 ID tokens, end-session). Two users sign in in turn
and see only their own runs (written on disk beforehand, no model run), one of them again
from a second browser; the Runner page admits only the admin in ``DA3_ADMINS``; sign-out
brings the sign-in page back.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from da3_core.app import auth
from da3_core.runs import workspace
from tests.e2e.conftest import ARTIFACTS, chromium_path
from tests.e2e.oidc_provider import MockOIDCProvider
from tests.e2e.server import AppServer, free_port
from tests.e2e.test_browser import MAIN, SIDEBAR, assert_clean, nav, new_page, open_url, shoot
from tests.unit import synthetic

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLIENT_ID, CLIENT_SECRET = "da3-dashboard", "mock-client-secret"
ALICE, BOB, BOSS = "alice@example.com", "bob@example.com", "boss@example.com"
SIGN_IN = ".st-key-au_login_default button"
SIGN_OUT = f"{SIDEBAR} .st-key-au_logout button"


@pytest.fixture(scope="module")
def signin_server(tmp_path_factory):
    """The app with sign-in on against the mock provider; DA3_ADMINS names the boss only."""
    chromium_path()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    provider = MockOIDCProvider(CLIENT_ID, CLIENT_SECRET, f"{base}/oauth2callback").start()
    folder = tmp_path_factory.mktemp("signin-secrets")
    secrets_toml = folder / "secrets.toml"
    secrets_toml.write_text(
        "[auth]\n"
        f'redirect_uri = "{base}/oauth2callback"\n'
        'cookie_secret = "an-e2e-cookie-secret-0123456789abcdef"\n'
        f'client_id = "{CLIENT_ID}"\n'
        f'client_secret = "{CLIENT_SECRET}"\n'
        f'server_metadata_url = "{provider.metadata_url}"\n'
    )
    ws = tmp_path_factory.mktemp("signin-workspace")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server = AppServer(
        ws,
        ARTIFACTS / "e2e-signin-server.log",
        port=port,
        env_extra={"STREAMLIT_SECRETS_FILES": str(secrets_toml), "DA3_ADMINS": BOSS},
    )
    server.start()
    try:
        yield server, provider
    finally:
        survivors = server.stop()
        provider.stop()
        assert not survivors, f"worker(s) outlived the server: {survivors}\n{server.log_tail()}"


def user_folder(provider: MockOIDCProvider, ws: Path, email: str) -> Path:
    """Where the app keeps this user's runs: sessions/<hash of the provider's iss and sub>."""
    return workspace.session_path(ws, auth.identity_key({"iss": provider.issuer, "sub": provider.sub_for(email)}))


def sign_in(page: Page, base: str, email: str, path: str = "") -> None:
    """From the app's sign-in page through the provider's form and back, signed in."""
    open_url(page, f"{base}/{path}")
    expect(page.locator(SIGN_IN)).to_be_visible()
    assert_clean(page, "sign-in page")
    page.locator(SIGN_IN).click()
    expect(page).to_have_url(re.compile(r"/authorize\?"))
    page.fill("#email", email)
    page.click("#sign-in")
    expect(
        page.locator(SIDEBAR).get_by_text(f"Signed in as {email.split('@')[0].capitalize()} ({email})")
    ).to_be_visible()
    assert not re.search(r"[?&]s=", page.url), page.url  # the address is no longer a key
    assert_clean(page, f"signed in as {email}")


def shown_run(page: Page, base: str) -> str | None:
    """The run id the Depth maps page shows, or None when it says there is none."""
    nav(page, base, "Depth maps")
    caption = page.locator(MAIN).get_by_text(re.compile(r"^Run .* · run-\d{8}-\d{6}-[0-9a-f]{6} ·"))
    no_run = page.locator(MAIN).get_by_text("No reconstruction yet in this session.")
    expect(caption.or_(no_run).first).to_be_visible()
    if no_run.count():
        return None
    return re.search(r"run-\d{8}-\d{6}-[0-9a-f]{6}", caption.first.inner_text()).group(0)


def test_two_users_sign_in_see_only_their_runs_and_the_runner_is_for_admins(signin_server, browser):
    server, provider = signin_server
    base, ws = server.url, server.workspace
    _, alice_run = synthetic.write_finished_run(user_folder(provider, ws, ALICE), synthetic.box_scene(2))
    _, bob_run = synthetic.write_finished_run(user_folder(provider, ws, BOB), synthetic.box_scene(3))
    anon_dir = workspace.new_session(ws)  # somebody's session from before sign-in was on
    synthetic.write_finished_run(anon_dir, synthetic.box_scene(2))
    anon_sid = anon_dir.name

    # A visitor with an old ?s= link: the sign-in page, nothing of that session.
    ctx, page = new_page(browser)
    try:
        open_url(page, f"{base}/?s={anon_sid}")
        expect(page.locator(SIGN_IN)).to_be_visible()
        expect(page.get_by_text("Sign in", exact=True).first).to_be_visible()
        assert page.locator(f"{SIDEBAR} [class*='st-key-sb_run_']").count() == 0
        shoot(page, "signin-01-sign-in-page.png", docs=False, full=False)
        # The gate comes before the runner: a visitor who did not sign in started no worker.
        assert server.children() == [], [p.cmdline() for p in server.children()]
    finally:
        ctx.close()

    # Alice: her run, not Bob's; the Runner page refuses her; sign-out.
    ctx, page = new_page(browser)
    try:
        sign_in(page, base, ALICE, f"?s={anon_sid}")
        assert f"s={anon_sid}" not in page.url
        # The runner starts its worker from the page's script; the process may appear a moment
        # after the page has drawn (the fresh clone's run of 45900c8 looked too early).
        deadline = time.monotonic() + 30
        while not server.children() and time.monotonic() < deadline:
            time.sleep(0.05)  # no event tells of a new child process; polled, bounded
        assert server.children(), "the worker starts once someone has signed in"
        shoot(page, "signin-02-alice-home.png", docs=False, full=False)
        assert shown_run(page, base) == alice_run.run_id
        nav(page, base, "Runner")
        expect(page.locator(MAIN).get_by_text(re.compile("The Runner page is for admins only"))).to_be_visible()
        assert page.locator(".st-key-rn_restart").count() == 0
        shoot(page, "signin-03-runner-refused.png", docs=False, full=False)
        page.locator(SIGN_OUT).click()
        expect(page.locator(SIGN_IN)).to_be_visible()
        assert "logout" in provider.events  # the provider's end-session endpoint was called
        # Signed out for good: a reload still asks for sign-in.
        page.reload(wait_until="commit")
        expect(page.locator(SIGN_IN)).to_be_visible()
    finally:
        ctx.close()

    # Bob, in another browser: his run only.
    ctx, page = new_page(browser)
    try:
        sign_in(page, base, BOB)
        assert shown_run(page, base) == bob_run.run_id
    finally:
        ctx.close()

    # Alice again, on "another device": the same run, found by her identity alone.
    ctx, page = new_page(browser)
    try:
        sign_in(page, base, ALICE, "Depth_maps")
        assert shown_run(page, base) == alice_run.run_id
    finally:
        ctx.close()

    # The boss is in DA3_ADMINS: the Runner page opens; the boss has no runs.
    ctx, page = new_page(browser)
    try:
        sign_in(page, base, BOSS)
        assert shown_run(page, base) is None
        nav(page, base, "Runner")
        expect(page.locator(".st-key-rn_restart")).to_be_visible()
        assert_clean(page, "runner as admin")
        shoot(page, "signin-04-runner-admin.png", docs=False, full=False)
    finally:
        ctx.close()

    tokens = [e for e in provider.events if e.startswith("token ")]
    assert tokens == [f"token {ALICE}", f"token {BOB}", f"token {ALICE}", f"token {BOSS}"], provider.events
    assert not [e for e in provider.events if e.startswith("refused")], provider.events
    # Each user's folder holds only what was put there: visits wrote nothing new.
    assert sorted(p.name for p in (ws / "sessions").iterdir()) == sorted(
        [user_folder(provider, ws, ALICE).name, user_folder(provider, ws, BOB).name, anon_sid]
    )
