"""Wire the platform into a running service: ``build_platform(settings) -> PlatformRuntime``.

``aiforge serve`` (and tests) call :func:`build_platform`, hand ``runtime.authenticator``,
``runtime.admission`` and ``runtime.usage_sink`` to the gateway, mount ``runtime.routers``,
hand ``runtime.deployments`` to the controller and call
:meth:`PlatformRuntime.attach_control_plane` with it, and await
:meth:`PlatformRuntime.start` before serving. ``start`` migrates the database,
creates the default organization/project and — on the very first start — an admin key,
stored in ``<data_dir>/admin-key`` (mode 0600) and returned once as
``runtime.new_admin_key`` for the CLI to print. ``AIFORGE_ADMIN_KEY`` sets the admin key
instead, for automation.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import APIRouter
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from aiforge.cluster.sources import ControlPlane
from aiforge.config import Settings
from aiforge.platform.api.keys import build_keys_router
from aiforge.platform.api.tenancy import build_tenancy_router
from aiforge.platform.api.usage import build_usage_router
from aiforge.platform.batches import BatchRunner, BatchService, BatchStore, build_batches_router
from aiforge.platform.db.engine import (
    PRIVATE_DIR_MODE,
    make_engine,
    make_sessionmaker,
    narrow_mode,
)
from aiforge.platform.db.migrate import upgrade_to_head
from aiforge.platform.deployments import (
    DeploymentService,
    LiveReplicas,
    build_deployments_router,
)
from aiforge.platform.domain.keys import DEFAULT_PEPPER
from aiforge.platform.files import FileService, FileStore, build_files_router
from aiforge.platform.limits.admission import LimitAdmission
from aiforge.platform.limits.factory import build_store
from aiforge.platform.metering.budgets import reseed_budgets
from aiforge.platform.metering.ledger import UsageLedger
from aiforge.platform.responses.store import SqlResponseStore
from aiforge.platform.services.authenticator import PlatformAuthenticator
from aiforge.platform.services.keys import KeyService
from aiforge.platform.services.setup import (
    DefaultTenancy,
    ensure_admin_key,
    ensure_default_tenancy,
)
from aiforge.platform.services.tenancy import TenancyService
from aiforge.platform.services.unit_of_work import UnitOfWork

logger = logging.getLogger(__name__)

ADMIN_KEY_FILE = "admin-key"


@dataclass
class PlatformRuntime:
    """The platform's parts for one gateway process."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    authenticator: PlatformAuthenticator
    admission: LimitAdmission
    usage_sink: UsageLedger
    tenancy: TenancyService
    keys: KeyService
    deployments: DeploymentService
    """The stored deployments; the controller reads them (a ``DeploymentSource``)."""
    live_replicas: LiveReplicas
    """Where ``/admin/v1/deployments`` reads live replicas (see :meth:`attach_control_plane`)."""
    response_store: SqlResponseStore
    """Stored Responses (``/v1/responses``): pass to ``create_app(response_store=...)``."""
    files: FileService | None = None
    batches: BatchService | None = None
    batch_runner: BatchRunner | None = None
    """Runs batches in the gateway process: ``aiforge serve`` starts it with the app's
    handler (:meth:`BatchRunner.start`) and stops it after the gateway drained."""
    routers: list[APIRouter] = field(default_factory=list)
    default: DefaultTenancy | None = None
    new_admin_key: str | None = None
    """Set by :meth:`start` when it generated the admin key: print it once, then forget it."""

    @property
    def admin_key_file(self) -> Path:
        return self.settings.data_dir / ADMIN_KEY_FILE

    def attach_control_plane(self, control_plane: ControlPlane) -> None:
        """Connect the controller (built after the platform): every deployment change wakes
        it, and the admin API shows the replicas it runs. Called on the controller's event
        loop, ``wake`` is always run on that loop, whichever thread made the change."""
        self.deployments.on_change = _on_loop_of_caller(control_plane.wake)
        self.live_replicas.control_plane = control_plane

    async def start(self) -> None:
        """Migrate, provision defaults and the admin key, load the key cache."""
        secure_data_dir(self.settings.data_dir)
        url = self.settings.resolved_database_url()
        await asyncio.to_thread(upgrade_to_head, url, engine=self.engine)
        self.default = await asyncio.to_thread(ensure_default_tenancy, self.sessions)
        token = await asyncio.to_thread(
            ensure_admin_key,
            self.sessions,
            project_id=self.default.project_id,
            configured=self.settings.admin_key,
            pepper=_pepper(self.settings),
        )
        if token is not None:
            write_secret_file(self.admin_key_file, token)
            self.new_admin_key = token
            logger.info("created the admin API key; stored in %s", self.admin_key_file)
        await self.authenticator.start()
        # The ledger replays what a previous run journaled but never flushed, then the
        # in-memory budgets are re-seeded from it (Redis keeps its own counters).
        await self.usage_sink.start()
        await reseed_budgets(self.admission, self.usage_sink)

    async def stop(self) -> None:
        """Stop polling keys, flush usage to the database, release the limit store."""
        try:
            await self.authenticator.stop()
            await self.usage_sink.stop()
        finally:
            await self.admission.aclose()
            self.engine.dispose()


def build_platform(settings: Settings) -> PlatformRuntime:
    """Build (but do not start) the platform for ``settings``; no I/O until ``start``."""
    engine = make_engine(settings.resolved_database_url())
    sessions = make_sessionmaker(engine)
    pepper = _pepper(settings)
    authenticator = PlatformAuthenticator(sessions, pepper=pepper)
    uow = UnitOfWork(sessions, on_access_change=authenticator.reload)
    tenancy = TenancyService(uow)
    keys = KeyService(uow, pepper=pepper)
    admission = LimitAdmission(build_store(settings), authenticator.limits_for)
    usage_sink = UsageLedger.from_settings(settings, engine)
    deployments = DeploymentService(uow)
    live_replicas = LiveReplicas()
    files, batches, batch_runner = _files_and_batches(settings, sessions)
    routers = [
        build_tenancy_router(tenancy),
        build_keys_router(keys),
        build_usage_router(usage_sink),
        build_deployments_router(deployments, live_replicas),
        build_files_router(files),
        build_batches_router(batches),
    ]
    return PlatformRuntime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        authenticator=authenticator,
        admission=admission,
        usage_sink=usage_sink,
        tenancy=tenancy,
        keys=keys,
        deployments=deployments,
        live_replicas=live_replicas,
        response_store=SqlResponseStore(sessions),
        files=files,
        batches=batches,
        batch_runner=batch_runner,
        routers=routers,
    )


def _files_and_batches(
    settings: Settings, sessions: sessionmaker[Session]
) -> tuple[FileService, BatchService, BatchRunner]:
    """``/v1/files`` (bytes under ``<data_dir>/files``), ``/v1/batches`` and the runner,
    which one gateway identifies by its host, port and data dir (a restarted gateway takes
    its batches back at once; another one waits for their leases to expire)."""
    files = FileService(
        sessions, FileStore(settings.data_dir / "files"), max_bytes=settings.files_max_bytes
    )
    batches = BatchService(sessions, files)
    store = BatchStore(sessions, files, max_line_bytes=settings.max_body_bytes)
    where = f"{socket.gethostname()}:{settings.port}:{settings.data_dir.resolve()}"
    runner = BatchRunner(
        store,
        runner_id=hashlib.sha256(where.encode()).hexdigest()[:32],
        concurrency=settings.batch_concurrency,
        max_lines=settings.batch_max_lines,
    )
    batches.on_change = runner.wake
    return files, batches, runner


def _on_loop_of_caller(wake: Callable[[], None]) -> Callable[[], None]:
    """``wake`` made safe to call from any thread: the admin routes run in FastAPI's thread
    pool, while a controller's wake (an ``asyncio.Event``, say) belongs to its loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return wake

    def call() -> None:
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            wake()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(wake)

    return call


def _pepper(settings: Settings) -> bytes:
    """The server pepper for key hashes (``Settings.key_pepper`` when the setting exists)."""
    configured = getattr(settings, "key_pepper", None)
    return configured.encode() if isinstance(configured, str) and configured else DEFAULT_PEPPER


def secure_data_dir(data_dir: Path) -> None:
    """The data dir holds the database, the admin key and the usage journal: owner-only
    (created 0700; an existing one open to others is narrowed to 0700)."""
    data_dir.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    narrow_mode(data_dir, PRIVATE_DIR_MODE)


def write_secret_file(path: Path, secret: str) -> None:
    """Write ``secret`` readable by the owner only (created 0600, never world-readable)."""
    path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secret + "\n")
    os.chmod(path, 0o600)  # the file may have existed with a wider mode
