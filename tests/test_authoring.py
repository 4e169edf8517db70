"""The authoring commands: render (a dry run), events and docs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.conftest import ROOT, write_config
from tests.test_config import UE_FLOW, build_env
from ue_flow.envelope import ENVELOPE_KEYS
from ue_flow.signing import generate_secret

POST_SALE_EXAMPLE = ROOT / "examples" / "post_sale" / "two_systems.json"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(UE_FLOW), *args],
        capture_output=True,
        text=True,
        env=build_env() if env is None else env,
        cwd=ROOT,
        timeout=60,
    )


def secret_env() -> dict[str, str]:
    """An environment in which every key, secret and header variable is set."""
    return build_env(
        UE_FLOW_KEY_MITXONLINE="key-mitxonline-real",
        UE_FLOW_KEY_LEARN="key-learn-real",
        UE_FLOW_SECRET_MITXONLINE=generate_secret(),
        UE_FLOW_SECRET_LEARN=generate_secret(),
        UE_DEPLOYMENT="deployment-token-real",
    )


def test_render_json_envelopes() -> None:
    result = run("render", "post_sale", str(POST_SALE_EXAMPLE), "--format", "json")
    deliveries = json.loads(result.stdout)

    assert result.returncode == 0, result.stderr
    assert [delivery["system"] for delivery in deliveries] == ["mitxonline", "learn"]
    for delivery in deliveries:
        assert tuple(delivery["body"]) == ENVELOPE_KEYS
        assert delivery["body"]["system_key"] == "***"
        assert delivery["body"]["type"] == "postsale"


def test_render_headers_present() -> None:
    result = run("render", "post_sale", str(POST_SALE_EXAMPLE), "--format", "json")
    mitxonline, learn = json.loads(result.stdout)

    assert mitxonline["headers"]["Content-Type"] == "application/json"
    assert mitxonline["headers"]["User-Agent"].startswith("ue-flow/")
    assert mitxonline["headers"]["webhook-id"].startswith("evt_")
    assert mitxonline["headers"]["webhook-id"] == learn["headers"]["webhook-id"]
    assert mitxonline["headers"]["webhook-timestamp"].isdigit()
    assert mitxonline["headers"]["webhook-signature"] == "v1,*** (signed at send time)"
    assert mitxonline["headers"]["X-UE-Deployment"] == "development"
    assert "X-UE-Deployment" not in learn["headers"]


def test_render_routes_lines() -> None:
    result = run("render", "post_sale", str(POST_SALE_EXAMPLE), "--format", "json")
    mitxonline, learn = json.loads(result.stdout)

    assert [line["id"] for line in mitxonline["body"]["data"]["lines"]] == [101, 102]
    assert [line["id"] for line in learn["body"]["data"]["lines"]] == [103]


def test_render_never_prints_secrets() -> None:
    env = secret_env()

    for output_format in ("text", "json"):
        args = ("render", "post_sale", str(POST_SALE_EXAMPLE), "--format", output_format)
        result = run(*args, env=env)
        output = result.stdout + result.stderr

        assert result.returncode == 0, result.stderr
        for name in ("UE_FLOW_KEY_MITXONLINE", "UE_FLOW_KEY_LEARN", "UE_DEPLOYMENT"):
            assert env[name] not in output, name
        for name in ("UE_FLOW_SECRET_MITXONLINE", "UE_FLOW_SECRET_LEARN"):
            assert env[name] not in output, name
            assert env[name].removeprefix("whsec_") not in output, name


def test_render_text_layout() -> None:
    result = run("render", "post_sale", str(POST_SALE_EXAMPLE), "--system", "learn")
    lines = result.stdout.splitlines()

    assert result.returncode == 0, result.stderr
    assert lines[0] == "# learn: POST http://127.0.0.1:8072/api/v1/ecommerce/webhook/"
    assert "webhook-signature: v1,*** (signed at send time)" in lines
    body = json.loads(lines[lines.index("") + 1])
    assert tuple(body) == ENVELOPE_KEYS


def test_render_invalid_payload(tmp_path: Path) -> None:
    payload = json.loads(POST_SALE_EXAMPLE.read_text(encoding="utf-8"))
    payload["data"]["state"] = "pending"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(payload), encoding="utf-8")

    result = run("render", "post_sale", str(path))

    assert result.returncode == 1
    assert result.stdout == ""
    assert "$.data.state" in result.stderr


def test_events_lists_catalog() -> None:
    result = run("events")
    lines = result.stdout.splitlines()

    assert result.returncode == 0, result.stderr
    assert lines[0].split() == ["EVENT", "TYPE", "HOOK", "SUBSCRIBERS", "DESCRIPTION"]
    assert lines[2].split()[:4] == ["post_sale", "postsale", "post_sale", "mitxonline,learn"]


def test_events_json() -> None:
    result = run("events", "--format", "json")
    events = {event["name"]: event for event in json.loads(result.stdout)}

    assert result.returncode == 0, result.stderr
    assert events["basket_add"] == {
        "name": "basket_add",
        "type": "presale",
        "hookspec": "basket_add",
        "subscribers": ["mitxonline"],
        "description": "An item was added to or removed from a basket.",
    }


def test_docs_shipped_file_current() -> None:
    result = run("docs", "--check")

    assert result.returncode == 0, result.stderr


def test_docs_check_stale_then_fixed(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    output = tmp_path / "docs" / "events.md"

    missing = run("docs", "--config", str(config), "--output", str(output), "--check")
    written = run("docs", "--config", str(config), "--output", str(output))
    current = run("docs", "--config", str(config), "--output", str(output), "--check")
    events_file = config / "events.yaml"
    events_file.write_text(
        events_file.read_text(encoding="utf-8").replace(
            "An order was completed successfully.", "An order was paid."
        ),
        encoding="utf-8",
    )
    stale = run("docs", "--config", str(config), "--output", str(output), "--check")
    regenerated = run("docs", "--config", str(config), "--output", str(output))
    fixed = run("docs", "--config", str(config), "--output", str(output), "--check")

    assert missing.returncode == 1
    assert "is missing" in missing.stderr
    assert written.returncode == 0, written.stderr
    assert current.returncode == 0, current.stderr
    assert stale.returncode == 1
    assert f"{output} is out of date" in stale.stderr
    assert regenerated.returncode == 0
    assert fixed.returncode == 0
    assert "An order was paid." in output.read_text(encoding="utf-8")


def test_docs_catalog_content() -> None:
    text = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")

    assert "## post_refund" in text
    assert "| `refund.lines[].amount` | Money (string) | yes |" in text
    assert "- Hook: `post_sale(user=..., order=...)`" in text
    assert os.sep + "work" not in text


def test_docs_marks_routing_owner() -> None:
    # The schemas let the owner out, but emit rejects an event without it.
    text = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")

    assert "| `product.system` | string or integer | for routing |" in text
    assert "| `lines[].product.system` | string or integer | for routing |" in text
    assert "| `lines[].product.sku` | string | yes |" in text
