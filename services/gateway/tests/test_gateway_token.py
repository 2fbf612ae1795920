"""`python -m gateway.token`: a JWT the gateway accepts, as the last line."""

from __future__ import annotations

import os
import subprocess
import sys

import jwt
import pytest

from gateway.auth import Authenticator
from gateway.config import AuthConfig
from gateway.token import main
from mesh.config import Env


def test_the_token_is_the_last_line_and_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--sub", "cus-7", "--ttl", "120"]) == 0
    token = capsys.readouterr().out.splitlines()[-1]
    config = AuthConfig.from_env(Env({}))
    assert Authenticator(config).authenticate(f"Bearer {token}").subject == "cus-7"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 120


def test_defaults_are_the_demo_customer_for_an_hour(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), options={"verify_signature": False})
    assert claims["sub"] == "cus-demo"
    assert claims["exp"] - claims["iat"] == 3600


def test_the_gateway_variables_are_honoured() -> None:
    env = {**os.environ, "GATEWAY_JWT_KEY": "z" * 32, "GATEWAY_JWT_AUDIENCE": "elsewhere"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway.token"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    token = result.stdout.splitlines()[-1]
    claims = jwt.decode(token, "z" * 32, algorithms=["HS256"], audience="elsewhere")
    assert claims["sub"] == "cus-demo"


@pytest.mark.parametrize("argv", [["--ttl", "0"], ["--ttl", "soon"], ["--sub", "has space"]])
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as error:
        main(argv)
    assert error.value.code == 2
    assert capsys.readouterr().out == ""


def test_a_bad_key_exits_2_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_JWT_KEY", "short")
    assert main([]) == 2
    assert "GATEWAY_JWT_KEY" in capsys.readouterr().err
