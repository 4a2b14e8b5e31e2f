"""Sign-in helpers without Streamlit's runtime: the identity key, the admin list, reading
``[auth]`` from secrets (`da3_core.app.auth`), and ``DA3_ADMINS`` (`da3_core.config`)."""

from __future__ import annotations

import re

import pytest

from da3_core.app import auth
from da3_core.config import ConfigError, load_settings
from da3_core.runs import workspace

GOOGLE = "https://accounts.google.com"
COMPLETE = {
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": "x" * 32,
    "client_id": "id",
    "client_secret": "secret",
    "server_metadata_url": "https://idp.example/.well-known/openid-configuration",
}


# --------------------------------------------------------------------------------------
# identity_key
# --------------------------------------------------------------------------------------


def test_identity_key_is_32_hex_and_a_valid_session_folder(tmp_path):
    key = auth.identity_key({"iss": GOOGLE, "sub": "1234567890", "email": "a@example.com"})
    assert re.fullmatch(r"[0-9a-f]{32}", key)
    assert workspace.session_path(tmp_path, key) == (tmp_path / "sessions" / key).resolve()


def test_identity_key_is_stable_and_follows_iss_and_sub_only():
    a = {"iss": GOOGLE, "sub": "111", "email": "a@example.com", "name": "A", "is_logged_in": True}
    # Same account seen on another device, with other claims changed (new email, new name, new token times).
    again = {"iss": GOOGLE, "sub": "111", "email": "renamed@example.com", "name": "A. B.", "exp": 99, "nonce": "n"}
    assert auth.identity_key(a) == auth.identity_key(again) == auth.identity_key(dict(a))


@pytest.mark.parametrize(
    "other",
    [
        {"iss": GOOGLE, "sub": "222"},  # another account, same provider
        {"iss": "https://login.microsoftonline.com/t/v2.0", "sub": "111"},  # same sub at another provider
        {"sub": "111"},  # no issuer
        {"email": "a@example.com"},  # email only
    ],
)
def test_identity_keys_of_different_identities_differ(other):
    assert auth.identity_key({"iss": GOOGLE, "sub": "111", "email": "a@example.com"}) != auth.identity_key(other)


def test_identity_key_falls_back_to_the_email_case_insensitively():
    assert auth.identity_key({"email": "A@Example.com "}) == auth.identity_key({"email": "a@example.com"})
    assert auth.identity_key({"email": "a@example.com"}) != auth.identity_key({"email": "b@example.com"})
    # An empty sub does not count as one.
    assert auth.identity_key({"sub": "", "email": "a@example.com"}) == auth.identity_key({"email": "a@example.com"})


def test_identity_key_without_sub_or_email_says_what_is_missing():
    with pytest.raises(ValueError, match="neither a subject .sub. nor an email"):
        auth.identity_key({"name": "Nobody", "is_logged_in": True})


# --------------------------------------------------------------------------------------
# Admins
# --------------------------------------------------------------------------------------


def test_is_admin_matches_the_email_case_insensitively():
    admins = ("boss@example.com",)
    assert auth.is_admin({"email": "Boss@Example.com"}, admins)
    assert auth.is_admin({"email": "boss@example.com", "email_verified": True}, admins)
    assert not auth.is_admin({"email": "intern@example.com"}, admins)
    assert not auth.is_admin({"name": "boss@example.com"}, admins)  # only the email claim counts
    assert not auth.is_admin({"email": "boss@example.com"}, ())  # nobody listed: nobody admitted


def test_is_admin_refuses_an_email_the_provider_marks_unverified():
    assert not auth.is_admin({"email": "boss@example.com", "email_verified": False}, ("boss@example.com",))


def test_da3_admins_is_parsed_into_lower_case_emails():
    assert load_settings({}).admins == ()
    assert load_settings({"DA3_ADMINS": "  "}).admins == ()
    s = load_settings({"DA3_ADMINS": " Boss@Example.com, ops@example.com,,boss@example.com "})
    assert s.admins == ("boss@example.com", "ops@example.com")


@pytest.mark.parametrize("raw", ["boss@example.com ops@example.com", "boss", "boss@localhost", "a@b.c;d@e.f"])
def test_da3_admins_refuses_what_is_not_a_list_of_emails(raw):
    with pytest.raises(ConfigError) as err:
        load_settings({"DA3_ADMINS": raw})
    message = str(err.value)
    assert message.startswith("DA3_ADMINS=") and "not an email address" in message and "separated by commas" in message


# --------------------------------------------------------------------------------------
# Reading [auth]
# --------------------------------------------------------------------------------------


def test_no_secrets_or_no_auth_section_means_sign_in_is_off():
    for secrets in (None, {}, {"other": {"key": 1}}):
        state = auth.auth_state(secrets)
        assert not state.on and not state.ready and state.problem == ""


def test_a_complete_default_provider():
    state = auth.auth_state({"auth": COMPLETE})
    assert state.ready and state.providers == ("default",)


def test_named_providers_are_found_in_file_order():
    section = {
        "redirect_uri": COMPLETE["redirect_uri"],
        "cookie_secret": "s" * 32,
        "google": {k: COMPLETE[k] for k in auth.PROVIDER_KEYS},
        "microsoft": {k: COMPLETE[k] for k in auth.PROVIDER_KEYS},
        "half": {"client_id": "x"},
    }
    state = auth.auth_state({"auth": section})
    assert state.ready and state.providers == ("google", "microsoft")
    # client_kwargs is options, never a provider.
    with_kwargs = {**COMPLETE, "client_kwargs": {"client_id": "x", "client_secret": "y", "server_metadata_url": "z"}}
    assert auth.auth_state({"auth": with_kwargs}).providers == ("default",)


@pytest.mark.parametrize(
    "drop, expected",
    [
        ("cookie_secret", "lacks cookie_secret"),
        ("redirect_uri", "lacks redirect_uri"),
        ("client_secret", "names no complete provider: add client_secret"),
    ],
)
def test_an_incomplete_section_is_on_with_a_problem_naming_the_fix(drop, expected):
    section = {k: v for k, v in COMPLETE.items() if k != drop}
    state = auth.auth_state({"auth": section})
    assert state.on and not state.ready  # never silently an open app
    assert expected in state.problem and "secrets.toml.example" in state.problem


def test_a_provider_name_with_an_underscore_is_a_problem():
    section = {"redirect_uri": "r", "cookie_secret": "c", "my_idp": {k: COMPLETE[k] for k in auth.PROVIDER_KEYS}}
    state = auth.auth_state({"auth": section})
    assert not state.ready and "my_idp" in state.problem and "rename" in state.problem


def test_user_label():
    assert auth.user_label({"name": "Ada", "email": "ada@example.com"}) == "Ada (ada@example.com)"
    assert auth.user_label({"email": "ada@example.com"}) == "ada@example.com"
    assert auth.user_label({}) == "signed-in user"


def test_auth_configured_outside_a_streamlit_run_follows_the_secrets_files(tmp_path, monkeypatch):
    """`auth_configured` reads the real ``st.secrets``: off with no secrets file (no crash),
    on with a file holding [auth]."""
    import streamlit as st
    from streamlit.runtime.secrets import secrets_singleton
    from streamlit.testing.v1.util import patch_config_options

    missing = tmp_path / "none" / "secrets.toml"
    present = tmp_path / "secrets.toml"
    present.write_text(
        '[auth]\nredirect_uri = "http://localhost:8501/oauth2callback"\ncookie_secret = "c"\n'
        'client_id = "i"\nclient_secret = "s"\nserver_metadata_url = "https://idp.example/.well-known/openid-configuration"\n'
    )
    assert st.secrets is secrets_singleton
    watchers = secrets_singleton._file_watchers_installed
    secrets_singleton._file_watchers_installed = True  # no poll thread on a temporary file
    try:
        for files, expected in (([str(missing)], False), ([str(present)], True)):
            secrets_singleton._reset()
            with patch_config_options({"secrets.files": files}):
                assert auth.auth_configured() is expected
                assert auth.current_state().ready is expected
    finally:
        secrets_singleton._reset()
        secrets_singleton._file_watchers_installed = watchers
