"""The one map from errors to exit codes, and a `raysft config show` that stays light."""

import argparse
import subprocess
import sys

import pytest
import yaml

from raysft.cli import exits


def _run(error: BaseException, policy: exits.Exits) -> int:
    def fail(_args):
        raise error

    return exits.run(argparse.Namespace(func=fail, exits=policy))


def test_bad_input_exits_2_a_failed_run_1_and_anything_else_is_a_bug(capsys):
    assert _run(exits.UsageError("pass a spec file"), exits.LOCAL) == 2
    assert capsys.readouterr().err == "error: pass a spec file\n"
    assert _run(FileNotFoundError("spec.yaml"), exits.LOCAL) == 2
    assert _run(RuntimeError("training failed"), exits.LOCAL) == 1
    assert capsys.readouterr().err.endswith("error: training failed\n")
    with pytest.raises(PermissionError):  # on this machine's own files, a traceback
        _run(PermissionError("denied"), exits.LOCAL)
    assert _run(PermissionError("denied"), exits.SERVER) == 2
    with pytest.raises(KeyError):
        _run(KeyError("bug"), exits.SERVER)
    with pytest.raises(KeyboardInterrupt):
        _run(KeyboardInterrupt(), exits.LOCAL)


def test_client_errors_are_made_terminal_safe_and_ctrl_c_exits_130(capsys):
    import grpc

    from raysft.service.client import JobServiceError

    error = JobServiceError(grpc.StatusCode.NOT_FOUND, "job \x1b[2Jgone", [("job_id", "no such job")])
    assert _run(error, exits.CLIENT) == 2
    assert capsys.readouterr().err == "error: NOT_FOUND: job \\x1b[2Jgone\n  job_id: no such job\n"
    assert _run(KeyboardInterrupt(), exits.CLIENT) == 130
    with pytest.raises(Exception, match="NOT_FOUND"):  # only `jobs` talks to a server
        _run(error, exits.LOCAL)


def test_config_show_imports_neither_grpc_sqlalchemy_torch_nor_ray(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"model": {"name_or_path": "m"}, "data": {"train": ["t.jsonl"]}}))
    code = ("import sys, contextlib, io\nfrom raysft.cli import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()):\n    assert main(['config', 'show', {str(spec)!r}]) == 0\n"
            "print(sorted(m for m in ('grpc', 'sqlalchemy', 'torch', 'ray') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
