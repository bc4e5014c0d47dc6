"""The gRPC job service: `raysft serve` runs it, `raysft jobs` and `JobClient` talk to it.

Jobs are validated JobSpecs run as Ray Jobs (submission id = job id); a durable store keeps jobs, their
events and checkpoints across restarts. Modules: states (lifecycle), store (SQL), specproto (spec ⇄
proto), paths (allowed roots and storage, one directory per job), limits (operator caps), events (what
events do to a job), runner (Ray Jobs API), cluster (the embedded Ray), supervisor (following jobs,
reconciling), jobs (operations), messages / servicer (gRPC translation), interceptors (auth, errors),
server, client, cli. The API is raysft/service/v1/jobs.proto.
"""

from raysft.service.client import JobClient, JobServiceError
from raysft.service.server import RunningServer, create_server, serve

__all__ = ["JobClient", "JobServiceError", "create_server", "serve", "RunningServer"]
