"""The Google Cloud provider: every port on a managed service, nothing running while idle.

==============  ============================================  =================================
port            service                                       adapter
==============  ============================================  =================================
MessageBus      Pub/Sub (pull, exactly-once, filters, DLQ)    ``PubSubMessageBus``
Scheduler       Cloud Tasks -> ``/internal/timers``           ``CloudTasksScheduler``
StateStore      Firestore (Native mode)                       ``FirestoreStateStore``
BlobStore       Cloud Storage                                 ``GcsBlobStore``
Runtime         Cloud Run job executions                      ``CloudRunRuntime``
Provisioner     Pub/Sub topic, bucket prefix, IAM identity    ``GcpProvisioner``
TenantStores    Firestore collections per tenant (only with   ``FirestoreTenantStores``
                ``SKYCRAWL_TENANT_DATA=dedicated``)
==============  ============================================  =================================

``build_ports`` takes ready SDK clients (``GcpClients``: tests, other credentials) and builds
the missing ones from ``GcpSettings`` with Application Default Credentials. The async gRPC
clients belong to the event loop that is running when they are made, so call
``build_ports`` and ``build_container_ports`` from a coroutine on the loop that will use
them (``functions/gcp/bootstrap.py`` keeps one loop per function instance).

Without ready clients the ports are built, and the Google SDKs imported, on the first use of
any port (``core.ports.deferred_ports``; the settings are checked when ``build_ports`` is
called): this module imports no Google SDK, so a function instance whose first request
touches no port (``GET /healthz``) pays none of them (about 400 ms on a quiet machine,
``bench/coldstart_bench.py``). An engine container needs the bus and the blob store only:
``engine_env`` passes it
``SKYCRAWL_PROVIDER=gcp``, the project, the bucket and the emulator hosts when set; its
credentials are the Cloud Run job's service account. Everything else it needs the conductor
passes itself (GUID, tenant, inbox queue, dispatch topic). See ``adapters/gcp/settings.py``
for every setting and ``deploy/gcp/README.md`` for what to deploy and what it costs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from adapters.gcp.settings import GcpSettings
from core.clock import Clock, SystemClock
from core.models import Egress
from core.ports import ContainerRuntime, Ports, deferred_ports
from core.settings import SkycrawlSettings
from core.tenant_data import routed_state

if TYPE_CHECKING:  # the SDKs are imported where a client is first built (see above)
    from google.cloud import firestore, iam_admin_v1, run_v2, tasks_v2
    from google.cloud.storage import Client as StorageClient  # type: ignore[import-untyped]
    from google.pubsub_v1 import PublisherAsyncClient, SubscriberAsyncClient

    from adapters.gcp.blob_store import GcsBlobStore
    from adapters.gcp.container_runtime import CloudRunRuntime
    from adapters.gcp.message_bus import PubSubMessageBus
    from adapters.gcp.tenant_iam import ContainerSubscriptions, TenantIam

_UNLIMITED = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


@dataclass
class GcpClients:
    """Ready SDK clients; whichever is None is built from the settings."""

    publisher: PublisherAsyncClient | None = None
    subscriber: SubscriberAsyncClient | None = None
    firestore: firestore.AsyncClient | None = None
    storage: StorageClient | None = None
    tasks: tasks_v2.CloudTasksAsyncClient | None = None
    run_jobs: run_v2.JobsAsyncClient | None = None
    run_executions: run_v2.ExecutionsAsyncClient | None = None
    run_tasks: run_v2.TasksAsyncClient | None = None
    iam: iam_admin_v1.IAMAsyncClient | None = None


def pubsub_clients(
    emulator_host: str | None = None,
) -> tuple[PublisherAsyncClient, SubscriberAsyncClient]:
    """Async Pub/Sub clients, on an insecure channel to ``emulator_host`` if given. Call it
    from a coroutine: the clients belong to the running event loop."""
    import grpc  # type: ignore[import-untyped]
    from google.pubsub_v1 import PublisherAsyncClient, SubscriberAsyncClient
    from google.pubsub_v1.services.publisher.transports import PublisherGrpcAsyncIOTransport
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcAsyncIOTransport

    if not emulator_host:
        return PublisherAsyncClient(), SubscriberAsyncClient()
    pub = grpc.aio.insecure_channel(emulator_host, options=_UNLIMITED)
    sub = grpc.aio.insecure_channel(emulator_host, options=_UNLIMITED)
    return (
        PublisherAsyncClient(transport=PublisherGrpcAsyncIOTransport(channel=pub)),
        SubscriberAsyncClient(transport=SubscriberGrpcAsyncIOTransport(channel=sub)),
    )


def storage_client(gcp: GcpSettings) -> StorageClient:
    """A Cloud Storage client; anonymous, on the emulator, when one is configured."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.storage import Client as StorageClient

    if gcp.storage_emulator_host:
        return StorageClient(
            project=gcp.project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": gcp.storage_emulator_host},
        )
    return StorageClient(project=gcp.project)


def _bus(gcp: GcpSettings, clients: GcpClients) -> PubSubMessageBus:
    from adapters.gcp.message_bus import PubSubMessageBus

    publisher, subscriber = clients.publisher, clients.subscriber
    if publisher is None or subscriber is None:
        publisher, subscriber = pubsub_clients(gcp.pubsub_emulator_host)
        clients.publisher, clients.subscriber = publisher, subscriber
    return PubSubMessageBus(
        project=gcp.project,
        publisher=publisher,
        subscriber=subscriber,
        emulator=bool(gcp.pubsub_emulator_host),
    )


def _runtime(
    gcp: GcpSettings, clients: GcpClients, subscriptions: ContainerSubscriptions | None = None
) -> CloudRunRuntime:
    from google.cloud import run_v2

    from adapters.gcp.container_runtime import CloudRunRuntime

    return CloudRunRuntime(
        jobs=clients.run_jobs or run_v2.JobsAsyncClient(),
        executions=clients.run_executions or run_v2.ExecutionsAsyncClient(),
        tasks=clients.run_tasks or run_v2.TasksAsyncClient(),
        job=gcp.job_path,
        browser_job=gcp.browser_job_path,
        container=gcp.run_container,
        lookup_limit=gcp.run_lookup_limit,
        subscriptions=subscriptions,
    )


def tenant_iam(
    settings: SkycrawlSettings, gcp: GcpSettings, clients: GcpClients, blobs: StorageClient
) -> TenantIam | None:
    """The tenants' identities, on the bus's Pub/Sub clients: None on the emulator (no IAM
    there) unless ``clients.iam`` is given (tests), or when ``tenant_identities`` is off."""
    if clients.iam is None and (gcp.pubsub_emulator_host or not gcp.tenant_identities):
        return None
    from google.cloud import iam_admin_v1

    from adapters.gcp.tenant_iam import TenantIam

    if clients.iam is None:
        clients.iam = iam_admin_v1.IAMAsyncClient()
    if clients.publisher is None or clients.subscriber is None:
        raise AssertionError("Pub/Sub clients missing")
    return TenantIam(
        project=gcp.project,
        bucket=gcp.bucket,
        iam=clients.iam,
        topics=clients.publisher,
        subscriptions=clients.subscriber,
        storage_client=blobs,
        inbox_queue=settings.inbox_queue,
        dispatch_topic=settings.dispatch_topic,
    )


def regional(gcp: GcpSettings, egress: Egress) -> GcpSettings:
    """``gcp`` in the egress's region when it names one (not ``local`` or empty): the job
    ``SKYCRAWL_GCP_RUN_JOB`` deployed in that region."""
    if egress.region in ("", "local", gcp.region):
        return gcp
    return gcp.model_copy(update={"region": egress.region})


def _cloud_run_per_region(
    gcp: GcpSettings,
    clients: GcpClients,
    made: dict[str, CloudRunRuntime],
    subscriptions: ContainerSubscriptions | None,
) -> Callable[[Egress], ContainerRuntime]:
    def build(egress: Egress) -> ContainerRuntime:
        where = regional(gcp, egress)
        if where.region not in made:  # the given clients serve the home region
            own = clients if where.region == gcp.region else GcpClients()
            made[where.region] = _runtime(where, own, subscriptions)
        return made[where.region]

    return build


def build_runtime(settings: SkycrawlSettings, egress: Egress) -> ContainerRuntime:
    """Cloud Run for a ``cloud-run`` egress of another family's deployment
    (``SKYCRAWL_GCP_*``; call it from a coroutine, the clients belong to the loop)."""
    return _runtime(regional(GcpSettings(), egress), GcpClients())


def build_ports(
    settings: SkycrawlSettings,
    gcp: GcpSettings,
    *,
    clock: Clock | None = None,
    clients: GcpClients | None = None,
    runtime: ContainerRuntime | None = None,
    runtimes: Mapping[str, ContainerRuntime] | None = None,
) -> Ports:
    """Every GCP adapter, on the given clients or new ones (from a coroutine, see above).
    One runtime per egress (``adapters.runtimes``; ``cloud-run`` egresses share one per
    region). ``runtime`` replaces every egress's runtime and ``runtimes`` those it names
    (the end-to-end test runs engine subprocesses).

    Without ready clients, the adapters (and the Google SDKs) are built together on the
    first use of any port (``core.ports.deferred_ports``): a function instance whose first
    request touches none pays none of them. The settings are checked now."""
    from adapters.runtimes import family_of

    gcp.require("project", "bucket", "timer_url", "timer_service_account")
    clock = clock or SystemClock()
    if clients is not None and any(vars(clients).values()):
        return _build_now(settings, gcp, clock, clients, runtime, runtimes)
    for egress in settings.egresses:
        if egress.runtime:
            family_of(egress)  # an unknown runtime is refused now, as building would
    made = clients or GcpClients()
    return deferred_ports(
        lambda: _build_now(settings, gcp, clock, made, runtime, runtimes),
        runtimes=[egress.name for egress in settings.egresses],
        clock=clock,
        pool=tuple(settings.egresses),
    )


def _build_now(
    settings: SkycrawlSettings,
    gcp: GcpSettings,
    clock: Clock,
    clients: GcpClients,
    runtime: ContainerRuntime | None,
    runtimes: Mapping[str, ContainerRuntime] | None,
) -> Ports:
    from google.cloud import firestore, tasks_v2

    from adapters.gcp.blob_store import GcsBlobStore
    from adapters.gcp.provisioner import GcpProvisioner
    from adapters.gcp.scheduler import CloudTasksScheduler
    from adapters.gcp.state_store import FirestoreStateStore
    from adapters.gcp.tenant_iam import ContainerSubscriptions
    from adapters.gcp.tenant_stores import FirestoreTenantStores
    from adapters.runtimes import build_runtimes, same_runtime

    bus = _bus(gcp, clients)
    publisher, subscriber = clients.publisher, clients.subscriber
    if publisher is None or subscriber is None:  # _bus made them
        raise AssertionError("Pub/Sub clients missing")
    blob_client = clients.storage or storage_client(gcp)
    database = clients.firestore or firestore.AsyncClient(
        project=gcp.project, database=gcp.firestore_database
    )
    stores = (
        FirestoreTenantStores(
            client=database, prefix=gcp.firestore_prefix, clock=clock, owns_client=False
        )
        if settings.tenant_data == "dedicated"
        else None
    )
    identities = tenant_iam(settings, gcp, clients, blob_client)
    subscriptions = (
        None if identities is None else ContainerSubscriptions(admin=bus.admin, iam=identities)
    )
    cloud_run: dict[str, CloudRunRuntime] = {}  # by region: where tenants' jobs live
    runtimes = (
        same_runtime(runtime, settings)
        if runtime is not None
        else build_runtimes(
            settings,
            home="gcp",
            build_home=_cloud_run_per_region(gcp, clients, cloud_run, subscriptions),
            overrides=runtimes,
        )
    )
    return Ports(
        bus=bus,
        scheduler=CloudTasksScheduler(
            client=clients.tasks or tasks_v2.CloudTasksAsyncClient(),
            queue_path=gcp.queue_path,
            timer_url=gcp.timer_url,
            service_account=gcp.timer_service_account,
            audience=gcp.audience,
            bus=bus,
            clock=clock,
        ),
        state=routed_state(
            FirestoreStateStore(client=database, prefix=gcp.firestore_prefix, clock=clock),
            stores,
        ),
        blobs=GcsBlobStore(client=blob_client, bucket=gcp.bucket),
        runtimes=runtimes,
        provisioner=GcpProvisioner(
            admin=bus.admin,
            storage_client=blob_client,
            bucket=gcp.bucket,
            dispatch_topic=settings.dispatch_topic,
            iam=identities,
            tenant_jobs=tuple(cloud_run.values()),
            stores=stores,
        ),
        clock=clock,
        pool=tuple(settings.egresses),
    )


def engine_env(gcp: GcpSettings) -> dict[str, str]:
    """What an engine container needs to reach the same bus and bucket."""
    env = {
        "SKYCRAWL_PROVIDER": "gcp",
        "SKYCRAWL_GCP_PROJECT": gcp.project,
        "SKYCRAWL_GCP_BUCKET": gcp.bucket,
    }
    if gcp.pubsub_emulator_host:
        env["SKYCRAWL_GCP_PUBSUB_EMULATOR_HOST"] = gcp.pubsub_emulator_host
    if gcp.storage_emulator_host:
        env["SKYCRAWL_GCP_STORAGE_EMULATOR_HOST"] = gcp.storage_emulator_host
    return env


def build_container_ports(settings: SkycrawlSettings) -> tuple[PubSubMessageBus, GcsBlobStore]:
    """The bus and blob store of an engine container, from its environment (``engine_env``).
    Called by the engine inside its event loop."""
    from adapters.gcp.blob_store import GcsBlobStore

    gcp = GcpSettings()
    gcp.require("project", "bucket")
    return _bus(gcp, GcpClients()), GcsBlobStore(client=storage_client(gcp), bucket=gcp.bucket)
