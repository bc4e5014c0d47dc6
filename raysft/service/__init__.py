"""The job service: `raysft serve` runs it, `raysft jobs` and `JobClient` talk to it.

Jobs are validated JobSpecs run as Ray Jobs (submission id = job id); a durable store keeps jobs, their
events and checkpoints across restarts. The API is raysft/service/v1/jobs.proto.

    client.py      the Python client (imports grpc and the generated stubs, nothing of the server)
    server.py      wires the parts into a running server
    operations.py  the job operations (create, cancel, resume, delete, follow) over the store and Ray
    api/           transports: gRPC servicer and interceptors, HTTP app and console, proto <-> spec
    jobs/          the job domain and its store
    ray/           the Ray adapter: Ray Jobs runner, supervisor, failure classification
                   (the embedded cluster it may start is raysft.local_ray.cluster)
    v1/            the proto and its generated code

`from raysft.service import JobClient` imports the client only.
"""

from raysft.service.client import JobClient, JobServiceError

__all__ = ["JobClient", "JobServiceError"]
