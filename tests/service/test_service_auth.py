"""Bearer-token auth on every RPC (streams included, health checks excepted), TLS, and binding rules."""

import datetime as dt
import ipaddress

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from raysft.service.client import JobClient, JobServiceError
from raysft.service.server import create_server
from raysft.service.jobs.states import JobState
from raysft.service.v1 import jobs_pb2
from service_helpers import NO_RAY, TOKEN, put_job

CALLS = {
    "GetJob (unary)": lambda stub, md: stub.GetJob(jobs_pb2.GetJobRequest(job_id="auth-1"), metadata=md),
    "CreateJob (unary)": lambda stub, md: stub.CreateJob(jobs_pb2.CreateJobRequest(validate_only=True), metadata=md),
    "ListJobs (unary)": lambda stub, md: stub.ListJobs(jobs_pb2.ListJobsRequest(), metadata=md),
    "WatchJob (stream)": lambda stub, md: list(stub.WatchJob(jobs_pb2.WatchJobRequest(job_id="auth-1"), metadata=md)),
    "GetJobLogs (stream)": lambda stub, md: list(stub.GetJobLogs(jobs_pb2.GetJobLogsRequest(job_id="auth-1"), metadata=md)),
}
BAD = {"no metadata": (), "wrong token": (("authorization", "Bearer not-the-token"),),
       "not a bearer": (("authorization", TOKEN),), "empty": (("authorization", "Bearer "),)}


@pytest.fixture(scope="module")
def auth_job(offline_server):
    return put_job(offline_server, "auth-1", JobState.SUCCEEDED)


@pytest.mark.parametrize("credentials", BAD.values(), ids=BAD.keys())
@pytest.mark.parametrize("name", CALLS)
def test_missing_or_wrong_tokens_are_unauthenticated(auth_job, stub, name, credentials):
    with pytest.raises(grpc.RpcError) as err:
        CALLS[name](stub, credentials)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "token" in err.value.details()


def test_the_right_token_passes_and_health_checks_need_none(offline_server, stub, channel):
    put_job(offline_server, "auth-2", JobState.SUCCEEDED, events=2)
    md = (("authorization", f"Bearer {TOKEN}"),)
    assert stub.GetJob(jobs_pb2.GetJobRequest(job_id="auth-2"), metadata=md).state == jobs_pb2.SUCCEEDED
    assert len(list(stub.WatchJob(jobs_pb2.WatchJobRequest(job_id="auth-2"), metadata=md))) == 2
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    with pytest.raises(grpc.RpcError) as err:
        list(reflect.ServerReflectionInfo(iter([ask])))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    services = next(iter(reflect.ServerReflectionInfo(iter([ask]), metadata=md))).list_services_response.service
    assert {"raysft.v1.JobService", "grpc.health.v1.Health"} <= {s.name for s in services}


def test_the_client_reports_the_status_code_by_name(offline_server):
    with JobClient(offline_server.address, token="wrong") as client:
        with pytest.raises(JobServiceError) as err:
            client.get_job("auth-1")
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED and str(err.value).startswith("UNAUTHENTICATED: ")


def _self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "raysft-test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


def test_tls_serves_clients_that_trust_the_certificate_only(tmp_path):
    cert, key = _self_signed(tmp_path)
    server = create_server("127.0.0.1:0", db_url=f"sqlite:///{tmp_path}/jobs.db", token=TOKEN, tls_cert=cert, tls_key=key,
                           ray_address=NO_RAY, allowed_roots=[str(tmp_path)])
    try:
        put_job(server, "tls-1", JobState.SUCCEEDED)
        with JobClient(server.address, token=TOKEN, tls_ca=cert) as client:
            assert client.get_job("tls-1").state == jobs_pb2.SUCCEEDED
        with JobClient(server.address, token=TOKEN, timeout_s=3) as plaintext:
            with pytest.raises(JobServiceError) as err:
                plaintext.get_job("tls-1")
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(grace_s=0)


def test_binding_beyond_loopback_needs_a_token(tmp_path):
    with pytest.raises(ValueError, match="pass --token-file"):
        create_server("0.0.0.0:0", db_url=f"sqlite:///{tmp_path}/jobs.db", ray_address=NO_RAY)
    with pytest.raises(ValueError, match="both --tls-cert and --tls-key"):
        create_server("127.0.0.1:0", db_url=f"sqlite:///{tmp_path}/jobs.db", ray_address=NO_RAY, tls_cert="c.pem")
