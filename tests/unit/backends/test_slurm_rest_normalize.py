"""Version normalization of the slurmrestd client, no service needed.

The response dicts below are hand-written from the documented OpenAPI schemas (v0.0.38 job_info /
job_submit_response; v0.0.39 exit_code as uint32_no_val; v0.0.40+ job_state list, exit_code as
process_exit_code_verbose, times as uint64_no_val), trimmed to the fields the client reads. They
are not captured traffic, except that the v0.0.38 shapes match what the test cluster answers.
"""

from __future__ import annotations

import pytest

from airflow_provider_lclstream.backends.slurm_rest import (
    SUPPORTED_VERSIONS,
    SlurmJobNotFound,
    SlurmRestError,
    api_minor,
    build_submit_body,
    exit_status,
    format_errors,
    job_environment,
    normalize_job,
    number,
    parse_state_response,
    parse_submit_response,
    split_state,
)

V38_JOB = {
    "job_id": 7,
    "name": "rt",
    "job_state": "FAILED",
    "state_reason": "NonZeroExitCode",
    "exit_code": 768,  # raw wait status: exit 3
    "submit_time": 1700000000,
    "start_time": 1700000001,
    "end_time": 1700000002,
    "standard_output": "/tmp/out-%j.txt",
    "standard_error": "",
}

V39_JOB = {
    "job_id": 8,
    "name": "rt",
    "job_state": "CANCELLED",
    "state_reason": "None",
    "exit_code": {"set": True, "infinite": False, "number": 15},  # raw wait status: SIGTERM
    "submit_time": {"set": True, "infinite": False, "number": 1700000000},
    "start_time": {"set": True, "infinite": False, "number": 1700000001},
    "end_time": {"set": True, "infinite": False, "number": 1700000002},
}

V41_JOB = {
    "job_id": 9,
    "name": "rt",
    "job_state": ["COMPLETED"],
    "state_reason": "None",
    "exit_code": {
        "status": ["SUCCESS"],
        "return_code": {"set": True, "infinite": False, "number": 0},
        "signal": {"id": {"set": False, "infinite": False, "number": 0}, "name": ""},
    },
    "submit_time": {"set": True, "infinite": False, "number": 1700000000},
    "start_time": {"set": True, "infinite": False, "number": 1700000001},
    "end_time": {"set": True, "infinite": False, "number": 1700000002},
    "standard_output": "/tmp/out-9.txt",
}


def test_v38_string_state_and_raw_exit_status() -> None:
    state = normalize_job(V38_JOB)
    assert state["job_id"] == "7"
    assert (state["state"], state["flags"], state["done"]) == ("FAILED", [], True)
    assert (state["exit_code"], state["signal"]) == (3, None)
    assert (state["start_time"], state["end_time"]) == (1700000001, 1700000002)
    assert state["reason"] == "NonZeroExitCode"
    assert state["raw"] == V38_JOB


def test_v39_wrapped_raw_exit_status_with_signal() -> None:
    state = normalize_job(V39_JOB)
    assert (state["state"], state["done"]) == ("CANCELLED", True)
    assert (state["exit_code"], state["signal"]) == (0, 15)
    assert state["submit_time"] == 1700000000


def test_v41_list_state_and_verbose_exit_code() -> None:
    state = normalize_job(V41_JOB)
    assert (state["state"], state["flags"], state["done"]) == ("COMPLETED", [], True)
    assert (state["exit_code"], state["signal"]) == (0, None)
    assert state["end_time"] == 1700000002


def test_v41_signaled_and_completing() -> None:
    job = {
        **V41_JOB,
        "job_state": ["CANCELLED", "COMPLETING"],
        "exit_code": {
            "status": ["SIGNALED"],
            "return_code": {"set": True, "infinite": False, "number": 0},
            "signal": {"id": {"set": True, "infinite": False, "number": 9}, "name": "KILL"},
        },
    }
    state = normalize_job(job)
    assert (state["state"], state["flags"]) == ("CANCELLED", ["COMPLETING"])
    assert state["done"] is False  # epilog still running
    assert (state["exit_code"], state["signal"]) == (0, 9)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("RUNNING", ("RUNNING", [])),
        ("COMPLETING", ("COMPLETING", [])),
        (["PENDING", "REQUEUED"], ("PENDING", ["REQUEUED"])),
        (["REQUEUED", "PENDING"], ("PENDING", ["REQUEUED"])),
        ([], ("UNKNOWN", [])),
        (None, ("UNKNOWN", [])),
    ],
)
def test_split_state(value: object, expected: tuple[str, list[str]]) -> None:
    assert split_state(value) == expected


def test_running_jobs_are_not_done() -> None:
    assert normalize_job({"job_id": 1, "job_state": "RUNNING"})["done"] is False
    assert normalize_job({"job_id": 1, "job_state": ["PENDING"]})["done"] is False
    # a running job has no exit code yet (NO_VAL in v0.0.39+)
    unset = {"set": False, "infinite": False, "number": 0}
    assert exit_status({"return_code": unset, "signal": {"id": unset}}) == (None, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, 5),
        ({"set": True, "infinite": False, "number": 5}, 5),
        ({"set": False, "infinite": False, "number": 0}, None),
        ({"set": True, "infinite": True, "number": 0}, None),
        (None, None),
        (True, None),
    ],
)
def test_number(value: object, expected: int | None) -> None:
    assert number(value) == expected


def test_environment_shapes() -> None:
    assert job_environment({"A": "1"}, "v0.0.38") == {"A": "1"}
    assert job_environment(["A=1", "B=x=y"], "v0.0.38") == {"A": "1", "B": "x=y"}
    assert job_environment({"A": "1", "B": "2"}, "v0.0.41") == ["A=1", "B=2"]
    assert job_environment(["A=1"], "v0.0.43") == ["A=1"]
    assert job_environment(None, "v0.0.38") == {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        job_environment(["NOEQUALS"], "v0.0.40")


def test_submit_body_script_placement() -> None:
    job = {"name": "x", "environment": {"A": "1"}, "current_working_directory": "/tmp"}
    v38 = build_submit_body("#!/bin/sh\n", job, "v0.0.38")
    assert v38 == {"script": "#!/bin/sh\n", "job": {**job, "environment": {"A": "1"}}}
    v40 = build_submit_body("#!/bin/sh\n", job, "v0.0.40")
    assert v40["script"] == "#!/bin/sh\n" and v40["job"]["environment"] == ["A=1"]
    v41 = build_submit_body("#!/bin/sh\n", job, "v0.0.41")
    assert "script" not in v41 and v41["job"]["script"] == "#!/bin/sh\n"
    assert job["environment"] == {"A": "1"}  # caller's dict untouched


def test_api_versions() -> None:
    assert [api_minor(v) for v in SUPPORTED_VERSIONS] == [38, 39, 40, 41, 42, 43]
    with pytest.raises(ValueError, match="v0.0.37"):
        api_minor("v0.0.37")


def test_submit_response_shapes() -> None:
    assert parse_submit_response({"errors": [], "job_id": 2, "step_id": "BATCH"}) == "2"
    v41 = {"job_id": 5, "step_id": "batch", "result": {"job_id": 5}, "errors": [], "warnings": []}
    assert parse_submit_response(v41) == "5"
    assert parse_submit_response({"result": {"job_id": 6}, "errors": []}) == "6"
    v38_error = {
        "errors": [
            {"error": "environment must be set", "error_code": 2127},
            {"error_code": 9001, "error": "Failure during parsing"},
        ]
    }
    with pytest.raises(SlurmRestError, match="environment must be set") as err:
        parse_submit_response(v38_error)
    assert len(err.value.errors) == 2


def test_state_response_not_found_and_errors() -> None:
    gone = {
        "errors": [
            {
                "description": "Unable to find JobId=999",
                "error_number": 2017,
                "error": "Invalid job id specified",
                "source": "slurm_load_job",
            }
        ],
        "jobs": [],
    }
    with pytest.raises(SlurmJobNotFound, match="Unable to find JobId=999"):
        parse_state_response(gone, "999")
    broken = {"errors": [{"error": "Unspecified error", "error_number": -1}], "jobs": []}
    with pytest.raises(SlurmRestError) as err:
        parse_state_response(broken, "1")
    assert not isinstance(err.value, SlurmJobNotFound)
    assert parse_state_response({"jobs": [V38_JOB, V41_JOB]}, "9")["job_id"] == "9"


def test_format_errors() -> None:
    errors = [{"description": "d", "error_number": 1, "source": "s"}, {"error": "e", "errno": 2}]
    assert format_errors(errors) == "d [1, s]; e [2]"
