"""Real deliveries verified with the official standardwebhooks package, across a rotation."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.conftest import REDIS_URL, ROOT, Receiver, load_example, write_config
from ue_flow.engine import Engine
from ue_flow.loader import load_config
from ue_flow.signing import generate_secret
from ue_flow.worker import EXIT_CONFIG

pytestmark = pytest.mark.slow


def rotation_env(
    worker_env: dict[str, str], tmp_path: Path, expires: datetime
) -> tuple[dict[str, str], str, str]:
    """Return an environment where mitxonline rotates secrets, and both secrets."""
    rotation = {
        "previous_secret_env": "UE_FLOW_PREVIOUS_SECRET_MITXONLINE",
        "previous_secret_expires": expires.isoformat().replace("+00:00", "Z"),
    }
    config = write_config(tmp_path / "rotating", system_changes={"mitxonline": rotation})
    current, previous = generate_secret(), generate_secret()
    env = {
        **worker_env,
        "UE_FLOW_CONFIG": str(config),
        "UE_FLOW_SECRET_MITXONLINE": current,
        "UE_FLOW_PREVIOUS_SECRET_MITXONLINE": previous,
    }
    return env, current, previous


def deliver_one(env: dict[str, str], receiver: Receiver, start_worker: Any) -> Any:
    start_worker(env)
    engine = Engine.for_redis(
        load_config(env["UE_FLOW_CONFIG"]), REDIS_URL, env["UE_FLOW_NAMESPACE"]
    )
    engine.emit("basket_add", **load_example("basket_add", "add_course"))
    return receiver.wait_for(1)[0]


def test_signature_verifies_officially(
    worker_env: dict[str, str], receivers: dict[str, Receiver], start_worker: Any
) -> None:
    request = deliver_one(worker_env, receivers["mitxonline"], start_worker)

    verified = Webhook(worker_env["UE_FLOW_SECRET_MITXONLINE"]).verify(
        request.body, request.headers
    )

    assert verified["system_slug"] == "mitxonline"
    assert len(request.headers["webhook-signature"].split()) == 1
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(request.body, request.headers)


def test_rotation_signs_with_both(
    worker_env: dict[str, str], tmp_path: Path, receivers: dict[str, Receiver], start_worker: Any
) -> None:
    expires = datetime.now(UTC) + timedelta(days=7)
    env, current, previous = rotation_env(worker_env, tmp_path, expires)

    request = deliver_one(env, receivers["mitxonline"], start_worker)

    assert len(request.headers["webhook-signature"].split()) == 2
    assert Webhook(current).verify(request.body, request.headers)["type"] == "presale"
    assert Webhook(previous).verify(request.body, request.headers)["type"] == "presale"


def test_rotation_expired_drops_previous(
    worker_env: dict[str, str], tmp_path: Path, receivers: dict[str, Receiver], start_worker: Any
) -> None:
    expires = datetime.now(UTC) - timedelta(minutes=1)
    env, current, previous = rotation_env(worker_env, tmp_path, expires)

    request = deliver_one(env, receivers["mitxonline"], start_worker)

    assert len(request.headers["webhook-signature"].split()) == 1
    assert Webhook(current).verify(request.body, request.headers)["type"] == "presale"
    with pytest.raises(WebhookVerificationError):
        Webhook(previous).verify(request.body, request.headers)


def test_worker_rejects_invalid_secret(worker_env: dict[str, str]) -> None:
    env = {**worker_env, "UE_FLOW_SECRET_LEARN": "whsec_tooshort"}

    result = subprocess.run(
        [sys.executable, "-m", "dramatiq", "ue_flow", "-p", "1", "-t", "1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == EXIT_CONFIG
    assert "UE_FLOW_SECRET_LEARN holds an invalid signing secret" in result.stderr
    assert "whsec_tooshort" not in result.stderr + result.stdout


def test_rotation_needs_expiry(tmp_path: Path) -> None:
    changes = {"mitxonline": {"previous_secret_env": "UE_FLOW_PREVIOUS_SECRET_MITXONLINE"}}
    config = write_config(tmp_path, system_changes=changes)

    result = subprocess.run(
        [str(Path(sys.executable).parent / "ue-flow"), "validate", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert "previous_secret_expires" in result.stderr
