"""Sign-in in the pages (`da3_core.app.auth`), in process with AppTest.

Real: the secrets file (a temporary ``secrets.toml`` with an ``[auth]`` section that
Streamlit itself reads, through its ``secrets.files`` option, for both ``st.secrets`` and
``st.login``'s own checks), ``st.login``'s validation and redirect token, ``st.logout``, the
pages, the run submitted to the real worker, the folders on disk. Faked: who is signed in.
AppTest has no browser and no identity provider, so ``AppTest.user`` stands in for the
claims Streamlit would read from its sign-in cookie after a real OpenID Connect round trip
(that round trip is in tests/e2e/test_signin.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from da3_core.app import auth
from da3_core.runs import records
from tests.app.kit import HOME, PAGES, check, keys, run_picker, texts
from tests.unit import synthetic

ISSUER = "https://idp.test"
ALICE = {
    "is_logged_in": True,
    "iss": ISSUER,
    "sub": "alice-0001",
    "email": "alice@example.com",
    "email_verified": True,
    "name": "Alice",
}
BOB = {
    "is_logged_in": True,
    "iss": ISSUER,
    "sub": "bob-0002",
    "email": "bob@example.com",
    "email_verified": True,
    "name": "Bob",
}
BOSS = {"is_logged_in": True, "iss": ISSUER, "sub": "boss-0003", "email": "Boss@Example.com", "name": "Boss"}
AUTH_TOML = """\
[auth]
redirect_uri = "http://localhost:8501/oauth2callback"
cookie_secret = "a-test-cookie-secret-of-some-length-0123456789"
client_id = "da3-test"
client_secret = "da3-test-secret"
server_metadata_url = "http://127.0.0.1:9/.well-known/openid-configuration"
"""


@contextmanager
def secrets_files(*paths: Path) -> Iterator[None]:
    """Streamlit reads its secrets from ``paths`` only (never the repository's or the home
    folder's ``.streamlit/secrets.toml``) until the block ends; no file watcher is started."""
    from streamlit.runtime.secrets import secrets_singleton
    from streamlit.testing.v1.util import patch_config_options

    watchers = secrets_singleton._file_watchers_installed
    secrets_singleton._reset()
    secrets_singleton._file_watchers_installed = True
    try:
        with patch_config_options({"secrets.files": [str(p) for p in paths]}):
            yield
    finally:
        secrets_singleton._reset()
        secrets_singleton._file_watchers_installed = watchers


@pytest.fixture
def signin_on(tmp_path) -> Iterator[Path]:
    """Sign-in configured, as an operator does it: a secrets.toml with [auth]."""
    path = tmp_path / "secrets.toml"
    path.write_text(AUTH_TOML)
    with secrets_files(path):
        yield path


@pytest.fixture
def signin_off(tmp_path) -> Iterator[None]:
    """No secrets file at all (today's deployments)."""
    with secrets_files(tmp_path / "absent" / "secrets.toml"):
        yield


def open_as(new_app, user: dict | None, sid: str | None = None, timeout: float = 60):
    at = new_app(sid, timeout=timeout)
    if user is not None:
        at.user = dict(user)
    return at


def folder_of(app_env, user: dict) -> Path:
    return app_env.workspace / "sessions" / auth.identity_key(user)


def sign_in_shown(at) -> bool:
    return "au_login_default" in keys(at.button) and "Sign in" in [s for s in texts(at.subheader)]


def query_sid(at) -> str | None:
    value = at.query_params.get("s")
    return value[0] if isinstance(value, list) else value


# --------------------------------------------------------------------------------------


def test_without_sign_in_the_link_is_the_key_as_before(new_app, app_env, signin_off):
    assert not auth.auth_configured()
    sid, folder = app_env.new_session()
    _, meta = synthetic.write_finished_run(folder, synthetic.box_scene(2))
    at = open_as(new_app, None, sid)
    at.run()
    check(at, "home without sign-in")
    assert query_sid(at) == sid and not sign_in_shown(at)
    assert "au_logout" not in keys(at.sidebar.button)
    assert list(at.dataframe[0].value["run"]) == [meta.run_id]
    at.switch_page(PAGES[4]).run()
    check(at, "runner without sign-in")
    assert "rn_restart" in keys(at.button)  # open to whoever has the page, as before


def test_visitors_not_signed_in_see_the_sign_in_page_and_no_runs(new_app, app_env, signin_on):
    sid, folder = app_env.new_session()  # somebody's anonymous session, with a run
    synthetic.write_finished_run(folder, synthetic.box_scene(2))
    before = sorted(p.name for p in (app_env.workspace / "sessions").iterdir())
    # Streamlit's default AppTest user has no is_logged_in; a real server says False.
    for user in ({"email": "test@example.com"}, {"is_logged_in": False}):
        at = open_as(new_app, user, sid)
        at.run()
        check(at, "home, signed out")
        for page in [HOME, *PAGES]:
            at.switch_page(page).run()
            check(at, page)
            assert sign_in_shown(at), (page, texts(at.markdown))
            assert not at.dataframe and not at.sidebar.selectbox and not at.metric, page
            assert "rn_restart" not in keys(at.button) and "rc_run" not in keys(at.button), page
        # The button calls st.login, which checks the real [auth] section and builds its redirect.
        at.button(key="au_login_default").click().run()
        check(at, "sign-in clicked")
    assert sorted(p.name for p in (app_env.workspace / "sessions").iterdir()) == before  # nothing written


def test_signed_in_users_runs_land_in_their_own_folder_and_follow_them(new_app, app_env, signin_on):
    """Alice's run goes to sessions/<her key>; she finds it from a second browser; Bob sees none
    of it, not even with a ?s= link to her folder or to an anonymous session."""
    alice_dir, bob_dir = folder_of(app_env, ALICE), folder_of(app_env, BOB)
    at = open_as(new_app, ALICE, timeout=120)
    at.switch_page(PAGES[0]).run()
    check(at, "reconstruct as Alice")
    assert query_sid(at) is None  # the address is no longer a key
    assert at.session_state["sid"] == alice_dir.name
    assert "Signed in as Alice (alice@example.com)" in " ".join(texts(at.sidebar.caption))
    at.radio(key="rc_source").set_value("Example scene").run()
    at.radio(key="model_kind").set_value("Untrained demo weights").run()
    at.button(key="rc_run").click().run()
    check(at, "run clicked")
    at.button(key="rc_cancel").click().run()
    deadline = time.monotonic() + 90
    while not [i for i in texts(at.info) if i.startswith("Cancelled:")]:
        assert time.monotonic() < deadline, (texts(at.info), texts(at.error))
        time.sleep(0.3)
        at.run()
        check(at, "after cancel")
    metas = records.list_session_runs(alice_dir)
    assert [m.status for m in metas] == ["cancelled"]
    alice_run = metas[0].run_id
    _, done = synthetic.write_finished_run(alice_dir, synthetic.box_scene(2))  # and one finished run

    # Alice on another device: a new browser session, same account, same runs.
    other = open_as(new_app, ALICE)
    other.run()
    check(other, "Alice, second browser")
    assert sorted(other.dataframe[0].value["run"]) == sorted([alice_run, done.run_id])
    assert run_picker(other).value == done.run_id

    # Bob: none of Alice's runs, with or without links to other folders.
    anon_sid, anon_dir = app_env.new_session()
    synthetic.write_finished_run(anon_dir, synthetic.box_scene(2))
    for sid in (None, alice_dir.name, anon_sid):
        bob = open_as(new_app, BOB, sid)
        bob.run()
        check(bob, f"Bob with ?s={sid}")
        assert not bob.dataframe and not bob.sidebar.selectbox, sid
        assert query_sid(bob) is None and bob.session_state["sid"] == bob_dir.name
        for page in PAGES[1:4]:
            bob.switch_page(page).run()
            check(bob, page)
            assert any("No reconstruction yet" in t for t in texts(bob.info)), page
    assert not bob_dir.exists()  # a visit writes nothing, signed in or not


def test_the_runner_page_admits_only_admins(new_app, app_env, signin_on):
    with app_env.settings_from({"DA3_ADMINS": "boss@example.com, ops@example.com"}):
        for user, admitted in ((BOSS, True), (ALICE, False), ({**BOSS, "email_verified": False}, False)):
            at = open_as(new_app, user)
            at.switch_page(PAGES[4]).run()
            check(at, f"runner as {user['email']}")
            assert ("rn_restart" in keys(at.button)) is admitted, user
            if not admitted:
                warning = " ".join(texts(at.warning))
                assert "for admins only" in warning and "DA3_ADMINS" in warning, warning
                assert not at.metric and not at.dataframe
    # Sign-in on, nobody listed: closed to everyone, and the page says how to open it.
    at = open_as(new_app, BOSS)
    at.switch_page(PAGES[4]).run()
    check(at, "runner, no admins")
    assert "rn_restart" not in keys(at.button)
    warning = " ".join(texts(at.warning))
    assert "closed" in warning and "DA3_ADMINS=you@example.com" in warning and "restart" in warning, warning


def test_sign_out_returns_to_the_sign_in_page(new_app, signin_on):
    at = open_as(new_app, ALICE)
    at.run()
    check(at, "home as Alice")
    assert not sign_in_shown(at)
    at.sidebar.button(key="au_logout").click().run()
    check(at, "signed out")
    assert at.user == {"is_logged_in": False}  # st.logout cleared the identity
    at.run()
    assert sign_in_shown(at) and not at.dataframe


def test_several_providers_get_a_button_each(new_app, tmp_path):
    path = tmp_path / "secrets.toml"
    provider = 'client_id = "c"\nclient_secret = "s"\nserver_metadata_url = "http://127.0.0.1:9/.well-known/openid-configuration"\n'
    path.write_text(
        '[auth]\nredirect_uri = "http://localhost:8501/oauth2callback"\ncookie_secret = "0123456789abcdef0123"\n'
        f"[auth.google]\n{provider}[auth.microsoft]\n{provider}"
    )
    with secrets_files(path):
        at = open_as(new_app, {"is_logged_in": False})
        at.run()
        check(at, "two providers")
        buttons = {b.key: b.label for b in at.button}
        assert (
            buttons["au_login_google"] == "Sign in with Google"
            and buttons["au_login_microsoft"] == "Sign in with Microsoft"
        )
        at.button(key="au_login_microsoft").click().run()
        check(at, "microsoft clicked")


@pytest.mark.parametrize(
    "toml, expected",
    [
        (
            '[auth]\nredirect_uri = "http://localhost:8501/oauth2callback"\nclient_id = "c"\n',
            "[auth] in secrets.toml lacks cookie_secret",
        ),
        (
            '[auth\nredirect_uri = "http://localhost:8501/oauth2callback"\n',
            "the secrets file could not be read",
        ),  # bad TOML
    ],
)
def test_a_broken_secrets_file_stops_every_page_with_the_fix(new_app, tmp_path, toml, expected):
    """Never an open app by mistake: Streamlit itself treats an unreadable file as no file."""
    path = tmp_path / "secrets.toml"
    path.write_text(toml)
    with secrets_files(path):
        for user in ({"is_logged_in": False}, ALICE):
            at = open_as(new_app, user)
            for page in (HOME, PAGES[4]):
                at.switch_page(page).run()
                check(at, page)
                errors = texts(at.error)
                assert errors and errors[0].startswith(f"Sign-in is set up wrongly: {expected}"), errors
                assert str(tmp_path) not in errors[0]  # no server path shown
                assert not sign_in_shown(at) and "rn_restart" not in keys(at.button) and not at.dataframe


def test_an_identity_without_subject_or_email_is_refused_with_what_to_do(new_app, signin_on):
    at = open_as(new_app, {"is_logged_in": True, "name": "Nameless"})
    at.run()
    check(at, "no identity")
    errors = texts(at.error)
    assert errors and "neither a subject (sub) nor an email" in errors[0] and "email scopes" in errors[0], errors
    assert not at.dataframe and "au_logout_err" in keys(at.button)


def test_without_authlib_every_page_says_how_to_install_it(new_app, signin_on, monkeypatch):
    monkeypatch.setattr(auth, "authlib_installed", lambda: False)
    at = open_as(new_app, ALICE)
    at.run()
    check(at, "no Authlib")
    errors = [e.value for e in at.error]
    assert errors and "Authlib is not installed" in errors[0] and "requirements-app.txt" in errors[0], errors
    assert not sign_in_shown(at) and not at.dataframe
