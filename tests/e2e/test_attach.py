"""``aiforge serve --replica-url``: gateways sharing a running replica, surviving SIGKILL."""

from __future__ import annotations

from pathlib import Path

from conftest import MODEL_NAME

from aiforge.testing.server import RemoteAiforgeServer


def test_second_gateway_attaches_and_restarts_after_sigkill(
    server: RemoteAiforgeServer, tmp_path: Path
) -> None:
    (replica,) = server.replicas()
    data_dir = tmp_path / "gateway-2"
    attached = RemoteAiforgeServer(
        "unused", serve_args=("--replica-url", replica["url"]), data_dir=data_dir,
        startup_timeout_s=120,
    )  # fmt: skip
    with attached:
        assert [m.id for m in attached.client().models.list().data] == [MODEL_NAME]
        first = attached.client().completions.create(model=MODEL_NAME, prompt="a", max_tokens=2)
        assert first.usage is not None
        attached.kill()
        attached.start()  # same port, same data dir: the admin key and ledger are reused
        again = attached.client().completions.create(model=MODEL_NAME, prompt="a", max_tokens=2)
        assert again.choices
        assert attached.replicas()[0]["state"] == "ready"
    # The shared replica is untouched by the second gateway's crash and stop.
    assert server.replicas()[0]["state"] == "ready"
